"""The shapes of Starling's HTTP API (interface.md), in Python.

What you send (a Task, a SwarmSpec, a Policy, an AgentSpec) is a `TypedDict` with the wire's own
camelCase keys, so a plain dict literal type-checks. What comes back is a frozen dataclass with
snake_case fields; each keeps the parsed JSON it came from in ``raw`` (left out of ``repr``), so a
field a newer node adds is never out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, TypedDict, Union

JSON = Any

# ---------------------------------------------------------------------------------------------
# What a client sends


class Policy(TypedDict, total=False):
    """What a request may do; it can only narrow the node's own policy."""

    allow: List[str]
    net: Literal["none", "host"]
    maxMemoryMB: int
    maxCpus: float
    maxTimeoutSeconds: float
    maxPids: int
    secrets: List[str]


# The required keys of a TypedDict sit in a base class, the optional ones (total=False) in the
# class that extends it: `NotRequired` would need Python 3.11.


class _TaskArgv(TypedDict):
    argv: List[str]


class Task(_TaskArgv, total=False):
    """One sandboxed command. Only ``argv`` is required."""

    id: str
    stdin: str
    files: Dict[str, str]
    env: Dict[str, str]
    secrets: List[str]
    timeoutSeconds: float
    memoryMB: int
    cpus: float
    net: Literal["none", "host"]


class SpawnBudget(TypedDict):
    """How many tasks a swarm's tasks may create below it, and how deep."""

    maxTasks: int
    maxDepth: int


class _SwarmTasks(TypedDict):
    tasks: List[Task]


class SwarmSpec(_SwarmTasks, total=False):
    maxAttempts: int
    policy: Policy
    spawn: SpawnBudget


class ModelEndpoint(TypedDict):
    """The OpenAI-compatible endpoint an agent's brain calls, and the node secret holding its key."""

    baseURL: str
    secret: str


class _AgentBrain(TypedDict):
    brain: Task


class AgentSpec(_AgentBrain, total=False):
    id: str
    policy: Policy
    model: ModelEndpoint


TaskLike = Union[Task, Mapping[str, Any]]

# ---------------------------------------------------------------------------------------------
# What a node answers


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> List[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class Health:
    node: str
    status: str
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Health":
        return cls(node=_str(d.get("node")), status=_str(d.get("status")), raw=dict(d))


@dataclass(frozen=True)
class Capacity:
    slots: int
    free: int


@dataclass(frozen=True)
class Member:
    name: str
    gossip: str
    api: str
    status: str  # "alive" | "suspect" | "dead" | "left"
    incarnation: int
    capacity: Capacity
    identity_key: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Member":
        cap = _dict(d.get("capacity"))
        return cls(name=_str(d.get("name")), gossip=_str(d.get("gossip")), api=_str(d.get("api")),
                   status=_str(d.get("status")), incarnation=_int(d.get("incarnation")),
                   capacity=Capacity(slots=_int(cap.get("slots")), free=_int(cap.get("free"))),
                   identity_key=d.get("identityKey") if isinstance(d.get("identityKey"), str) else None, raw=dict(d))


@dataclass(frozen=True)
class TaskResult:
    """How one sandboxed run ended. ``ok`` is true when it exited 0."""

    exit_code: Optional[int]
    signal: Optional[int]
    reason: str  # "exited" | "timeout" | "oom" | "killed" | "denied"
    stdout: str
    stderr: str
    truncated: bool
    outputs: Dict[str, str]
    outputs_base64: Dict[str, str]
    warnings: List[str]
    node: str
    attempts: int
    duration_ms: int
    cpu_ms: int
    peak_memory_kb: int
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.reason == "exited" and self.exit_code == 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TaskResult":
        return cls(exit_code=_opt_int(d.get("exitCode")), signal=_opt_int(d.get("signal")),
                   reason=_str(d.get("reason")), stdout=_str(d.get("stdout")), stderr=_str(d.get("stderr")),
                   truncated=d.get("truncated") is True, outputs=_dict(d.get("outputs")),
                   outputs_base64=_dict(d.get("outputsBase64")), warnings=_list(d.get("warnings")),
                   node=_str(d.get("node")), attempts=_int(d.get("attempts")), duration_ms=_int(d.get("durationMs")),
                   cpu_ms=_int(d.get("cpuMs")), peak_memory_kb=_int(d.get("peakMemoryKB")), raw=dict(d))


def _result(value: Any) -> Optional[TaskResult]:
    return TaskResult.from_json(value) if isinstance(value, dict) else None


@dataclass(frozen=True)
class SwarmTask:
    """One task of a swarm as its status lists it."""

    id: str
    state: str  # "pending" | "running" | "succeeded" | "failed" | "cancelled"
    node: Optional[str]
    attempt: int
    result: Optional[TaskResult]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SwarmTask":
        node = d.get("node")
        return cls(id=_str(d.get("id")), state=_str(d.get("state")), node=node if isinstance(node, str) else None,
                   attempt=_int(d.get("attempt")), result=_result(d.get("result")), raw=dict(d))


@dataclass(frozen=True)
class SwarmStatus:
    """A swarm's state and counts, and (unless asked without) one page of its tasks."""

    id: str
    state: str  # "running" | "done" | "cancelled"
    total: int
    succeeded: int
    failed: int
    running: int
    pending: int
    cancelled: int
    tasks: List[SwarmTask]
    offset: int
    next_offset: Optional[int]
    parent: Optional[str]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> int:
        """Tasks that will not run again: succeeded, failed or cancelled."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def is_running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SwarmStatus":
        parent = d.get("parent")
        return cls(id=_str(d.get("id")), state=_str(d.get("state")), total=_int(d.get("total")),
                   succeeded=_int(d.get("succeeded")), failed=_int(d.get("failed")), running=_int(d.get("running")),
                   pending=_int(d.get("pending")), cancelled=_int(d.get("cancelled")),
                   tasks=[SwarmTask.from_json(t) for t in _list(d.get("tasks")) if isinstance(t, dict)],
                   offset=_int(d.get("offset")), next_offset=_opt_int(d.get("nextOffset")),
                   parent=parent if isinstance(parent, str) else None, raw=dict(d))


@dataclass(frozen=True)
class SwarmSummary:
    """One line of `Client.list_swarms`."""

    id: str
    state: str
    total: int
    succeeded: int
    failed: int
    created_at_ms: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SwarmSummary":
        return cls(id=_str(d.get("id")), state=_str(d.get("state")), total=_int(d.get("total")),
                   succeeded=_int(d.get("succeeded")), failed=_int(d.get("failed")),
                   created_at_ms=_opt_int(d.get("createdAtMs")), raw=dict(d))


@dataclass(frozen=True)
class SwarmList:
    """The mesh's swarms, newest first. ``partial`` when some node did not answer (``unanswered``)."""

    swarms: List[SwarmSummary]
    partial: bool
    unanswered: List[str]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SwarmList":
        return cls(swarms=[SwarmSummary.from_json(s) for s in _list(d.get("swarms")) if isinstance(s, dict)],
                   partial=d.get("partial") is True, unanswered=[u for u in _list(d.get("unanswered")) if isinstance(u, str)])


@dataclass(frozen=True)
class TaskEvent:
    """One finished task from a swarm's event stream. ``event_id`` is what ``Last-Event-ID`` resumes after."""

    event_id: Optional[str]
    id: str
    state: str
    node: Optional[str]
    result: Optional[TaskResult]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, event_id: Optional[str], d: Mapping[str, Any]) -> "TaskEvent":
        node = d.get("node")
        return cls(event_id=event_id, id=_str(d.get("id")), state=_str(d.get("state")),
                   node=node if isinstance(node, str) else None, result=_result(d.get("result")), raw=dict(d))


@dataclass(frozen=True)
class SessionRef:
    """A session just created: its id and the node that owns it."""

    id: str
    owner: str


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint stored by a majority of the session's replicas."""

    seq: int
    hash: str


@dataclass(frozen=True)
class ActResult:
    """An effect's answer. ``replayed`` is true when its key had already run: ``result`` is the recorded one."""

    key: str
    replayed: bool
    outcome: str
    result: Optional[TaskResult]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ActResult":
        return cls(key=_str(d.get("key")), replayed=d.get("replayed") is True, outcome=_str(d.get("outcome"), "done"),
                   result=_result(d.get("result")), raw=dict(d))


@dataclass(frozen=True)
class JournalEntry:
    """One effect in a session's journal: its key and recorded result."""

    seq: int
    key: str
    outcome: str
    result: Optional[TaskResult]
    started_seq: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "JournalEntry":
        return cls(seq=_int(d.get("seq")), key=_str(d.get("key")), outcome=_str(d.get("outcome")),
                   result=_result(d.get("result")), started_seq=_opt_int(d.get("startedSeq")), raw=dict(d))


@dataclass(frozen=True)
class Session:
    """A session's latest state and (one page of) its journal. ``journal_more``: more entries follow."""

    id: str
    owner: str
    replicas: List[str]
    seq: int
    state: JSON
    hash: str
    signer: str
    journal: List[JournalEntry]
    journal_more: bool
    epoch: Optional[int]
    state_seq: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Session":
        return cls(id=_str(d.get("id")), owner=_str(d.get("owner")),
                   replicas=[r for r in _list(d.get("replicas")) if isinstance(r, str)], seq=_int(d.get("seq")),
                   state=d.get("state"), hash=_str(d.get("hash")), signer=_str(d.get("signer")),
                   journal=[JournalEntry.from_json(e) for e in _list(d.get("journal")) if isinstance(e, dict)],
                   journal_more=d.get("journalMore") is True, epoch=_opt_int(d.get("epoch")),
                   state_seq=_opt_int(d.get("stateSeq")), raw=dict(d))


@dataclass(frozen=True)
class AgentRef:
    """An agent just started: its id, its session and the node running its brain."""

    id: str
    session: str
    owner: str


@dataclass(frozen=True)
class Agent:
    """A hosted agent's state. ``state`` is one of "starting", "running", "waiting" (a model call in flight), "done", "failed", "stopped"."""

    id: str
    session: str
    owner: str
    state: str
    restarts: int
    model_calls: int
    model_calls_replayed: int
    exit_code: Optional[int]
    reason: Optional[str] = None  # why it failed or stopped, when the node says
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    TERMINAL_STATES = frozenset({"done", "failed", "stopped"})

    @property
    def finished(self) -> bool:
        return self.state in self.TERMINAL_STATES

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Agent":
        return cls(id=_str(d.get("id")), session=_str(d.get("session")), owner=_str(d.get("owner")),
                   state=_str(d.get("state")), restarts=_int(d.get("restarts")), model_calls=_int(d.get("modelCalls")),
                   model_calls_replayed=_int(d.get("modelCallsReplayed")), exit_code=_opt_int(d.get("exitCode")),
                   reason=d.get("reason") if isinstance(d.get("reason"), str) else None, raw=dict(d))
