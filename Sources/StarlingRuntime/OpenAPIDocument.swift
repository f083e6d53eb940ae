import Foundation

/// The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json`.
///
/// This text is the one source of truth for the API's shape: the router's routes must match
/// its paths (RuntimeTests), schemathesis checks every live answer against it
/// (IntegrationTests), and the server answers 405 with `Allow` from it. A route added to
/// `APIServer` joins this document in the same change.
public enum OpenAPIDocument {
    /// The document as served, byte for byte.
    public static let json = #"""
{
  "openapi": "3.1.0",
  "info": {
    "title": "Starling node API",
    "version": "1",
    "description": "The HTTP API every Starling node serves on --api. Errors are JSON objects {\"error\": \"...\"} with a 4xx status for a client's mistake; a 5xx is a defect."
  },
  "paths": {
    "/v1/health": {
      "get": {
        "operationId": "getHealth",
        "summary": "Liveness of this node",
        "responses": {
          "200": {
            "description": "The node serves its API.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}
          }
        }
      }
    },
    "/v1/members": {
      "get": {
        "operationId": "listMembers",
        "summary": "The member table as this node sees it",
        "responses": {
          "200": {
            "description": "Every member this node knows, itself included.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MemberList"}}}
          }
        }
      }
    },
    "/metrics": {
      "get": {
        "operationId": "getMetrics",
        "summary": "Prometheus metrics",
        "responses": {
          "200": {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {"text/plain": {"schema": {"type": "string"}}}
          }
        }
      }
    },
    "/mcp": {
      "post": {
        "operationId": "postMCPMessage",
        "summary": "Model Context Protocol, Streamable HTTP transport (spec 2025-06-18): one JSON-RPC message per request",
        "description": "Not a REST route: the MCP specification defines its bodies, headers (Accept: application/json, text/event-stream; Mcp-Session-Id; MCP-Protocol-Version) and answers. An initialize request without Mcp-Session-Id opens a session. Errors are JSON-RPC error objects.",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {
          "200": {"description": "The answer to a request, as a server-sent event stream.", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
          "202": {"description": "A notification or response was accepted."},
          "400": {"description": "Not a JSON-RPC message, no session, or an unsupported protocol version.", "content": {"application/json": {"schema": {"type": "object"}}}},
          "403": {"description": "A browser Origin from another host.", "content": {"application/json": {"schema": {"type": "object"}}}},
          "404": {"description": "No such MCP session (ended or expired).", "content": {"application/json": {"schema": {"type": "object"}}}},
          "406": {"description": "The client does not accept both JSON and server-sent events.", "content": {"application/json": {"schema": {"type": "object"}}}},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "415": {"description": "The body is not application/json.", "content": {"application/json": {"schema": {"type": "object"}}}},
          "503": {"description": "This node holds its maximum of MCP sessions.", "content": {"application/json": {"schema": {"type": "object"}}}}
        }
      },
      "delete": {
        "operationId": "deleteMCPSession",
        "summary": "End the MCP session named by Mcp-Session-Id",
        "responses": {
          "200": {"description": "The session ended."},
          "400": {"description": "No Mcp-Session-Id header.", "content": {"application/json": {"schema": {"type": "object"}}}},
          "404": {"description": "No such MCP session.", "content": {"application/json": {"schema": {"type": "object"}}}}
        }
      }
    },
    "/v1/openapi.json": {
      "get": {
        "operationId": "getOpenAPIDocument",
        "summary": "This document",
        "responses": {
          "200": {
            "description": "The OpenAPI 3.1 document of every route the node serves.",
            "content": {"application/json": {"schema": {"type": "object", "required": ["openapi", "info", "paths"]}}}
          }
        }
      }
    },
    "/v1/swarms": {
      "post": {
        "operationId": "submitSwarm",
        "summary": "Submit a swarm of tasks",
        "description": "The swarm is validated (400 with the reason), handed to its owner on the ring and stored there and on its replicas before the answer. Its tasks then run wherever slots are free.",
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SwarmSpec"}}}
        },
        "responses": {
          "202": {
            "description": "Accepted: the swarm's id (and its owner).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SwarmCreated"}}}
          },
          "400": {"$ref": "#/components/responses/BadRequest"},
          "409": {"description": "Two tasks have the same id (a task without an id is named t<index>), or the mesh cannot take the swarm as it is (no member offers what a task needs; too large to travel between nodes).",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      },
      "get": {
        "operationId": "listSwarms",
        "summary": "Swarms of the mesh, newest first (this node's and every other live node's, merged)",
        "parameters": [
          {"name": "limit", "in": "query", "required": false, "description": "At most this many (default 100).",
           "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
        ],
        "responses": {
          "200": {
            "description": "The swarms the live nodes own or replicate, each once. partial is true when some node did not answer in time (named in unanswered).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SwarmList"}}}
          },
          "400": {"$ref": "#/components/responses/BadRequest"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/swarms/{id}": {
      "get": {
        "operationId": "getSwarm",
        "summary": "A swarm's status and one page of its tasks",
        "description": "Any node answers: a node that does not hold the swarm forwards the request to one that does. A page holds at most 1,000 tasks and stops early once its results pass 32 MiB; nextOffset names the next page.",
        "parameters": [
          {"$ref": "#/components/parameters/SwarmID"},
          {"name": "tasks", "in": "query", "required": false, "description": "false: counts only, no tasks.",
           "schema": {"type": "boolean"}},
          {"name": "offset", "in": "query", "required": false, "description": "Index of the first task of the page.",
           "schema": {"type": "integer", "minimum": 0, "maximum": 4294967295}},
          {"name": "limit", "in": "query", "required": false, "description": "At most this many tasks (default 1,000).",
           "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
        ],
        "responses": {
          "200": {
            "description": "The swarm's counts, and a page of tasks unless tasks=false.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SwarmStatus"}}}
          },
          "400": {"$ref": "#/components/responses/BadRequest"},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      },
      "delete": {
        "operationId": "cancelSwarm",
        "summary": "Cancel a swarm",
        "description": "Running tasks are killed, pending ones never start, child swarms are cancelled too. The swarm stays readable, in state cancelled.",
        "parameters": [{"$ref": "#/components/parameters/SwarmID"}],
        "responses": {
          "202": {
            "description": "The cancel reached the swarm's owner.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SwarmCreated"}}}
          },
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/swarms/{id}/events": {
      "get": {
        "operationId": "followSwarm",
        "summary": "Task completions as server-sent events",
        "description": "One `task` event per finished task, in completion order, its id EPOCH.OWNER.SEQ: the task's finish number and the owner reign that gave it (data: {\"id\", \"state\", \"node\"?, \"result\"?}); then one `done` event (data: {\"id\", \"state\"}) once the swarm is done or cancelled. A task is shown once a majority of the swarm's replica set stores its result, so an id names the same task on every node that holds the swarm. A stream resumes after the Last-Event-ID it is given, on any node: exactly once across the deaths of owners; after a network partition a cursor of the side whose numbering lost resumes where the two agree (tasks may be shown again, none is missed). Comment lines keep an idle stream alive; a stream closes after 10 minutes, and the client reconnects with Last-Event-ID.",
        "parameters": [
          {"$ref": "#/components/parameters/SwarmID"},
          {"name": "Last-Event-ID", "in": "header", "required": false, "description": "The id of the last event the client has (EPOCH.OWNER.SEQ, or a plain SEQ).",
           "schema": {"type": "string", "pattern": "^ *([0-9]{1,9}\\.[0-9]{1,2}\\.[0-9]{1,9}|[0-9]{0,9}) *$"}}
        ],
        "responses": {
          "200": {
            "description": "An event stream.",
            "content": {"text/event-stream": {"schema": {
              "type": "object",
              "description": "One server-sent event.",
              "properties": {
                "event": {"enum": ["task", "done"]},
                "id": {"type": "string", "pattern": "^([0-9]+\\.[0-9]+\\.)?[0-9]+$"},
                "data": {"type": "string", "description": "JSON: {\"id\", \"state\", \"node\"?, \"result\"?: TaskResult} for task, {\"id\", \"state\"} for done."}
              }
            }}}
          },
          "400": {"$ref": "#/components/responses/BadRequest"},
          "404": {"$ref": "#/components/responses/NotFound"},
          "429": {"$ref": "#/components/responses/TooMany"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/sessions": {
      "post": {
        "operationId": "createSession",
        "summary": "Create a session; answered once a majority of its replica set stored its creation",
        "requestBody": {
          "required": false,
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionCreate"}}}
        },
        "responses": {
          "201": {"description": "Created.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionCreated"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"},
          "409": {"description": "A session with this id exists.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/sessions/{id}": {
      "get": {
        "operationId": "getSession",
        "summary": "A session's latest state, seq, hash, signer and journal (entries after since)",
        "parameters": [
          {"$ref": "#/components/parameters/SessionID"},
          {"name": "since", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807}}
        ],
        "responses": {
          "200": {"description": "The session as its owner serves it (what a majority stored).",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Session"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      },
      "delete": {
        "operationId": "deleteSession",
        "summary": "Delete a session",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "responses": {
          "204": {"description": "Deleted."},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/sessions/{id}/checkpoint": {
      "post": {
        "operationId": "checkpointSession",
        "summary": "Record a state; answered once a majority of the replica set stored it",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"type": "object", "required": ["state"], "properties": {"state": {}}}}}
        },
        "responses": {
          "200": {"description": "Stored by a majority.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionRecorded"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"},
          "404": {"$ref": "#/components/responses/NotFound"},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/sessions/{id}/actions": {
      "post": {
        "operationId": "actInSession",
        "summary": "Run an effect once per key; a key already recorded returns its result with replayed true",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"allOf": [
            {"$ref": "#/components/schemas/Task"},
            {"type": "object", "required": ["key"], "properties": {"key": {"type": "string", "pattern": "^[!-~]{1,128}$",
              "not": {"pattern": "^(model/|swarm/|starling[.])"},
              "description": "Keys starting with model/, swarm/ or starling. are the node's own (an agent's journal) and refused with 400."}}}
          ]}}}
        },
        "responses": {
          "200": {"description": "The effect's result (run now, or recorded before: replayed).",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionActed"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"},
          "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"description": "The effect runs now (outcome running), or its start was recorded and its result never was (outcome unknown), or its result was recorded and later dropped by compaction (outcome expired): it is never run again.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionEffectPending"}}}},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/agents": {
      "post": {
        "operationId": "createAgent",
        "summary": "Create an agent: a session carrying its spec, and its brain started on the session's owner",
        "requestBody": {
          "required": true,
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentSpec"}}}
        },
        "responses": {
          "201": {"description": "Created; the brain starts on the owner.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentCreated"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"},
          "409": {"description": "A session with this id exists.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "413": {"$ref": "#/components/responses/TooLarge"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/agents/{id}": {
      "get": {
        "operationId": "getAgent",
        "summary": "An agent's state, owner, restarts and model calls",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "responses": {
          "200": {"description": "The agent as its session's owner sees it.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Agent"}}}},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      },
      "delete": {
        "operationId": "stopAgent",
        "summary": "Stop an agent's brain (recorded as stopped); its session is kept",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "responses": {
          "202": {"description": "Stopped (or it had ended before: state says how).",
                  "content": {"application/json": {"schema": {"type": "object", "required": ["id", "state"],
                    "properties": {"id": {"type": "string"}, "state": {"type": "string"}}}}}},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    },
    "/v1/agents/{id}/logs": {
      "get": {
        "operationId": "getAgentLogs",
        "summary": "The brain's stderr so far (its runs on the owner, else the tail its end recorded)",
        "parameters": [{"$ref": "#/components/parameters/SessionID"}],
        "responses": {
          "200": {"description": "Text.", "content": {"text/plain": {"schema": {"type": "string"}}}},
          "404": {"$ref": "#/components/responses/NotFound"},
          "503": {"$ref": "#/components/responses/Unavailable"}
        }
      }
    }
  },
  "components": {
    "parameters": {
      "SwarmID": {"name": "id", "in": "path", "required": true, "description": "16 lowercase hex digits.",
                  "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}},
      "SessionID": {"name": "id", "in": "path", "required": true, "description": "1 to 64 of [A-Za-z0-9._-].",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}
    },
    "responses": {
      "BadRequest": {"description": "The request is malformed; the error says why.",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "NotFound": {"description": "No node of the mesh holds this swarm.",
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "TooLarge": {"description": "The body is larger than a swarm may be.",
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "TooMany": {"description": "Too many event streams are open on this node; retry later.",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Unavailable": {"description": "The mesh cannot do it now (no owner reachable, a store write failed); retry after Retry-After.",
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    },
    "schemas": {
      "AgentSpec": {
        "type": "object", "required": ["brain"],
        "description": "A hosted agent. Its brain runs with no network and no secrets; the node adds the model's key to its model calls. The spec is kept in its session's creation record: at most about 16 KiB (413).",
        "properties": {
          "id": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$"},
          "brain": {"allOf": [
            {"$ref": "#/components/schemas/Task"},
            {"type": "object", "properties": {
              "net": {"enum": ["none", null]},
              "secrets": {"type": ["array", "null"], "maxItems": 0},
              "env": {"type": ["object", "null"],
                      "propertyNames": {"not": {"enum": ["STARLING_SESSION", "STARLING_AGENT", "STARLING_EFFECT_KEY"]}}}
            }}
          ]},
          "policy": {"oneOf": [{"$ref": "#/components/schemas/Policy"}, {"type": "null"}]},
          "model": {"oneOf": [
            {"type": "object", "required": ["baseURL", "secret"],
             "properties": {"baseURL": {"type": "string", "maxLength": 2048,
                                        "description": "https, or plain http only to 127.0.0.1 or localhost: the node sends the model's key with every call",
                                        "pattern": "^(https://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*|http://(127\\.0\\.0\\.1|localhost))(:[0-9]{1,4})?(/[A-Za-z0-9._~-]*)*$"},
                            "secret": {"type": "string", "minLength": 1, "maxLength": 255}}},
            {"type": "null"}
          ]}
        }
      },
      "AgentEffectResult": {
        "description": "In an agent's session, what the node itself recorded: the agent's start or end (starlingBuiltin), or a model call's or swarm spawn's answer (status and body, as handed to the brain).",
        "oneOf": [
          {"type": "object", "required": ["starlingBuiltin"],
           "properties": {"starlingBuiltin": {"enum": ["start", "end"]}, "state": {"type": ["string", "null"]},
                          "exitCode": {"type": ["integer", "null"]}, "reason": {"type": ["string", "null"]},
                          "stderrTail": {"type": ["string", "null"]}, "node": {"type": ["string", "null"]},
                          "stdoutTail": {"type": ["string", "null"]}}},
          {"type": "object", "required": ["status", "body"],
           "properties": {"status": {"type": "integer"}, "body": {"type": "string"}, "tokens": {"type": ["integer", "null"]}}}
        ]
      },
      "AgentCreated": {
        "type": "object", "required": ["id", "session", "owner"],
        "properties": {"id": {"type": "string"}, "session": {"type": "string"}, "owner": {"type": "string"}}
      },
      "Agent": {
        "type": "object", "required": ["id", "session", "owner", "state", "restarts", "modelCalls", "modelCallsReplayed", "exitCode"],
        "properties": {
          "id": {"type": "string"}, "session": {"type": "string"}, "owner": {"type": "string"},
          "state": {"enum": ["starting", "running", "waiting", "done", "failed", "stopped"], "description": "waiting: the brain runs and a model call of its is in flight on the node"},
          "restarts": {"type": "integer", "minimum": 0}, "modelCalls": {"type": "integer", "minimum": 0},
          "modelCallsReplayed": {"type": "integer", "minimum": 0}, "exitCode": {"type": ["integer", "null"]},
          "reason": {"type": ["string", "null"]}, "epoch": {"type": "integer"}, "seq": {"type": "integer"},
          "output": {"type": ["string", "null"], "description": "The tail of the brain's stdout once it ended (its answer, by convention)."}
        }
      },
      "Health": {
        "type": "object",
        "required": ["node", "status"],
        "additionalProperties": false,
        "properties": {
          "node": {"type": "string", "minLength": 1, "maxLength": 64, "description": "This node's name."},
          "status": {"const": "ok"}
        }
      },
      "MemberList": {
        "type": "object",
        "required": ["members"],
        "additionalProperties": false,
        "properties": {
          "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}}
        }
      },
      "Member": {
        "type": "object",
        "required": ["name", "gossip", "api", "status", "incarnation", "capacity"],
        "additionalProperties": false,
        "properties": {
          "name": {"type": "string", "minLength": 1, "maxLength": 64},
          "gossip": {"type": "string", "minLength": 1, "description": "HOST:PORT of its UDP gossip and TCP streams."},
          "api": {"type": "string", "maxLength": 128, "description": "HOST:PORT of its HTTP API, as it announces it."},
          "status": {"enum": ["alive", "suspect", "dead", "left"]},
          "incarnation": {"type": "integer", "minimum": 0},
          "capacity": {
            "type": "object",
            "required": ["slots", "free"],
            "additionalProperties": false,
            "properties": {
              "slots": {"type": "integer", "minimum": 0, "maximum": 4294967295},
              "free": {"type": "integer", "minimum": 0, "maximum": 4294967295}
            }
          },
          "identityKey": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "The member's Ed25519 public key, when it gossips one. A name stays pinned to its key while peers hold the member."}
        }
      },
      "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}}
      },
      "EnvName": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"},
      "Policy": {
        "type": "object",
        "description": "Narrows the node's policy; it can never widen it.",
        "properties": {
          "allow": {"type": ["array", "null"], "maxItems": 4096, "items": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[^\\u0000]*$"}},
          "net": {"enum": ["none", "host", null]},
          "maxMemoryMB": {"type": ["integer", "null"], "minimum": 8, "maximum": 1048576},
          "maxCpus": {"type": ["number", "null"], "minimum": 0.01, "maximum": 1024},
          "maxTimeoutSeconds": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 86400},
          "maxPids": {"type": ["integer", "null"], "minimum": 1, "maximum": 65536},
          "secrets": {"type": ["array", "null"], "maxItems": 256, "items": {"$ref": "#/components/schemas/EnvName"}}
        }
      },
      "Task": {
        "type": "object",
        "required": ["argv"],
        "description": "One sandboxed run. It starts in /task, which holds files; what it writes under /task/out comes back in outputs.",
        "properties": {
          "id": {"type": ["string", "null"], "description": "Unique within the swarm; default t<index>.",
                 "pattern": "^([A-Za-z0-9_-]|\\.[A-Za-z0-9_-]|[A-Za-z0-9_-][A-Za-z0-9_.-]|[A-Za-z0-9_.-]{3,128})$"},
          "argv": {"type": "array", "minItems": 1, "maxItems": 4096,
                   "prefixItems": [{"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"}],
                   "items": {"type": "string", "pattern": "^[^\\u0000]*$"}},
          "stdin": {"type": ["string", "null"]},
          "files": {"type": ["object", "null"], "maxProperties": 256,
                    "propertyNames": {"maxLength": 1024, "pattern": "^([^./\\u0000]|\\.[^./\\u0000]|[^./\\u0000][^/\\u0000]|[^/\\u0000]{3,255})(/([^./\\u0000]|\\.[^./\\u0000]|[^./\\u0000][^/\\u0000]|[^/\\u0000]{3,255}))*$"},
                    "additionalProperties": {"type": "string"}},
          "env": {"type": ["object", "null"], "maxProperties": 256,
                  "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"},
                  "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"}},
          "secrets": {"type": ["array", "null"], "maxItems": 256, "items": {"$ref": "#/components/schemas/EnvName"}},
          "timeoutSeconds": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 86400},
          "memoryMB": {"type": ["integer", "null"], "minimum": 8, "maximum": 1048576, "description": "Default 512 (or the policy's maxMemoryMB when lower); placement reserves it."},
          "cpus": {"type": ["number", "null"], "minimum": 0.01, "maximum": 1024, "description": "Default 1 (or the policy's maxCpus when lower)."},
          "net": {"enum": ["none", "host", null]},
          "pids": {"type": ["integer", "null"], "minimum": 1, "maximum": 65536}
        }
      },
      "SwarmSpec": {
        "type": "object",
        "required": ["tasks"],
        "description": "Task ids must be unique within the swarm (409 otherwise), and the tasks' inputs (argv, stdin, files) at most 64 MiB in all (400).",
        "properties": {
          "tasks": {"type": "array", "minItems": 1, "maxItems": 10000, "items": {"$ref": "#/components/schemas/Task"}},
          "maxAttempts": {"type": ["integer", "null"], "minimum": 1, "maximum": 10, "description": "Runs of one task before it counts as failed (default 1)."},
          "policy": {"oneOf": [{"$ref": "#/components/schemas/Policy"}, {"type": "null"}]},
          "spawn": {
            "oneOf": [
              {"type": "object", "required": ["maxTasks", "maxDepth"],
               "properties": {"maxTasks": {"type": "integer", "minimum": 0, "maximum": 100000},
                              "maxDepth": {"type": "integer", "minimum": 0, "maximum": 8}}},
              {"type": "null"}
            ]
          }
        }
      },
      "SwarmCreated": {
        "type": "object",
        "required": ["id"],
        "properties": {
          "id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
          "owner": {"type": "string"}
        }
      },
      "TaskResult": {
        "type": "object",
        "required": ["exitCode", "signal", "reason", "stdout", "stderr", "truncated", "outputs", "node", "attempts", "durationMs", "cpuMs", "peakMemoryKB"],
        "properties": {
          "exitCode": {"type": ["integer", "null"]},
          "signal": {"type": ["integer", "null"]},
          "reason": {"enum": ["exited", "timeout", "oom", "killed", "denied"]},
          "stdout": {"type": "string"},
          "stderr": {"type": "string"},
          "truncated": {"type": "boolean"},
          "outputs": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Files under /task/out whose content is UTF-8."},
          "outputsBase64": {"type": "object", "additionalProperties": {"type": "string", "contentEncoding": "base64"}, "description": "Files under /task/out whose content is not UTF-8, base64."},
          "warnings": {"type": "array", "items": {"type": "string"}, "description": "What was cut or left out, in words."},
          "node": {"type": "string"},
          "attempts": {"type": "integer", "minimum": 0},
          "durationMs": {"type": "integer", "minimum": 0},
          "cpuMs": {"type": "integer", "minimum": 0},
          "peakMemoryKB": {"type": "integer", "minimum": 0}
        }
      },
      "TaskState": {"enum": ["pending", "running", "succeeded", "failed", "cancelled"]},
      "SwarmTaskStatus": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
          "id": {"type": "string"},
          "state": {"$ref": "#/components/schemas/TaskState"},
          "node": {"type": "string", "description": "Where the current or last attempt runs or ran."},
          "attempt": {"type": "integer", "minimum": 0},
          "result": {"$ref": "#/components/schemas/TaskResult"}
        }
      },
      "SwarmStatus": {
        "type": "object",
        "required": ["id", "state", "total", "succeeded", "failed", "running", "pending", "cancelled"],
        "properties": {
          "id": {"type": "string"},
          "state": {"enum": ["running", "done", "cancelled"]},
          "total": {"type": "integer", "minimum": 0},
          "succeeded": {"type": "integer", "minimum": 0},
          "failed": {"type": "integer", "minimum": 0},
          "running": {"type": "integer", "minimum": 0},
          "pending": {"type": "integer", "minimum": 0},
          "cancelled": {"type": "integer", "minimum": 0},
          "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/SwarmTaskStatus"}, "description": "Absent with tasks=false."},
          "offset": {"type": "integer", "minimum": 0},
          "nextOffset": {"type": "integer", "minimum": 0, "description": "Offset of the next page, when there is one."},
          "parent": {"type": "object", "required": ["swarm", "task"], "description": "For a sub-swarm: the swarm and task index that spawned it through its socket.",
                     "properties": {"swarm": {"type": "string"}, "task": {"type": "integer", "minimum": 0}}}
        }
      },
      "SessionCreate": {
        "type": "object",
        "properties": {
          "id": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "Default: 16 random hex digits."},
          "policy": {"oneOf": [{"$ref": "#/components/schemas/Policy"}, {"type": "null"}]}
        }
      },
      "SessionCreated": {
        "type": "object",
        "required": ["id", "owner"],
        "properties": {"id": {"type": "string"}, "owner": {"type": "string"}}
      },
      "SessionRecorded": {
        "type": "object",
        "required": ["seq", "hash"],
        "properties": {"seq": {"type": "integer", "minimum": 1}, "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
      },
      "SessionActed": {
        "type": "object",
        "required": ["key", "replayed", "outcome", "result"],
        "properties": {
          "key": {"type": "string"},
          "replayed": {"type": "boolean"},
          "outcome": {"const": "done"},
          "result": {"$ref": "#/components/schemas/TaskResult"}
        }
      },
      "SessionEffectPending": {
        "type": "object",
        "required": ["error", "key", "outcome"],
        "properties": {
          "error": {"type": "string"},
          "key": {"type": "string"},
          "outcome": {"enum": ["running", "unknown", "expired"]},
          "startedSeq": {"type": "integer", "minimum": 1},
          "resultSeq": {"type": "integer", "minimum": 1}
        }
      },
      "Session": {
        "type": "object",
        "required": ["id", "owner", "replicas", "seq", "state", "hash", "signer", "journal"],
        "properties": {
          "id": {"type": "string"},
          "owner": {"type": "string"},
          "replicas": {"type": "array", "items": {"type": "string"}},
          "epoch": {"type": "integer", "minimum": 0},
          "seq": {"type": "integer", "minimum": 0},
          "state": {"description": "The latest checkpoint's JSON; null before the first."},
          "stateSeq": {"type": "integer", "minimum": 0},
          "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
          "signer": {"type": "string"},
          "journal": {
            "type": "array",
            "items": {
              "type": "object",
              "required": ["seq", "key", "result"],
              "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "key": {"type": "string"},
                "startedSeq": {"type": "integer", "minimum": 1},
                "outcome": {"enum": ["done", "running", "unknown", "expired"]},
                "result": {"oneOf": [{"$ref": "#/components/schemas/TaskResult"}, {"$ref": "#/components/schemas/AgentEffectResult"}, {"type": "null"}]}
              }
            }
          },
          "journalMore": {"type": "boolean"}
        }
      },
      "SwarmList": {
        "type": "object",
        "required": ["swarms"],
        "properties": {
          "swarms": {
            "type": "array",
            "items": {
              "type": "object",
              "required": ["id", "state", "total", "succeeded", "failed"],
              "properties": {
                "id": {"type": "string"},
                "state": {"enum": ["running", "done", "cancelled"]},
                "total": {"type": "integer", "minimum": 0},
                "succeeded": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
                "createdAtMs": {"type": "integer", "minimum": 0}
              }
            }
          },
          "partial": {"type": "boolean"},
          "unanswered": {"type": "array", "items": {"type": "string"}}
        }
      }
    }
  }
}
"""#

    /// Methods (upper case) the document lists for each path template.
    public static let methodsByPath: [String: [String]] = {
        guard let doc = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let paths = doc["paths"] as? [String: [String: Any]] else { return [:] }
        return paths.mapValues { $0.keys.map { $0.uppercased() }.sorted() }
    }()

    /// The methods documented for a concrete request path, or nil when no path template
    /// matches it. A `{name}` segment of a template matches any one non-empty segment.
    public static func methods(forPath path: String) -> [String]? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (template, methods) in methodsByPath {
            let parts = template.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == segments.count else { continue }
            let matches = zip(parts, segments).allSatisfy { part, segment in
                part.hasPrefix("{") && part.hasSuffix("}") ? !segment.isEmpty : part == segment
            }
            if matches { return methods }
        }
        return nil
    }
}
