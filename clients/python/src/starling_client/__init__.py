"""Python client for Starling: swarms, sessions, agents and members of a mesh, over its HTTP API.

    from starling_client import Client
    mesh = Client("127.0.0.1:8401")
    print(mesh.run({"argv": ["python3", "-c", "print(6 * 7)"]}).stdout)
"""

from .client import DEFAULT_API, Client, ProgressCallback
from .errors import ResponseTooLarge, StarlingConnectionError, StarlingError, WaitTimedOut
from .events import EventStream
from .models import (ActResult, Agent, AgentRef, AgentSpec, Capacity, Checkpoint, Health, JournalEntry, Member,
                     ModelEndpoint, Policy, Session, SessionRef, SpawnBudget, SwarmList, SwarmSpec, SwarmStatus,
                     SwarmSummary, SwarmTask, Task, TaskEvent, TaskResult)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_API", "Client", "ProgressCallback", "EventStream",
    "StarlingError", "StarlingConnectionError", "ResponseTooLarge", "WaitTimedOut",
    "ActResult", "Agent", "AgentRef", "AgentSpec", "Capacity", "Checkpoint", "Health", "JournalEntry", "Member",
    "ModelEndpoint", "Policy", "Session", "SessionRef", "SpawnBudget", "SwarmList", "SwarmSpec", "SwarmStatus",
    "SwarmSummary", "SwarmTask", "Task", "TaskEvent", "TaskResult",
]
