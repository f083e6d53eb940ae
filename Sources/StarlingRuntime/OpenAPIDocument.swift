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
    }
  },
  "components": {
    "schemas": {
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
          }
        }
      },
      "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}}
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
