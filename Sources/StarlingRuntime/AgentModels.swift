import Foundation
import StarlingCore
import StarlingCrypto
import StarlingSandbox

/// Where an agent's model calls go: an OpenAI-compatible endpoint, and the name of the node
/// secret that is its API key. The key is added by the node; it never enters the sandbox.
public struct ModelEndpoint: Codable, Sendable, Equatable {
    public var baseURL: String
    public var secret: String

    public init(baseURL: String, secret: String) {
        self.baseURL = baseURL
        self.secret = secret
    }
}

/// interface.md's AgentSpec: the brain (a Task run in a sandbox with no network), the policy
/// its effects and swarms run under, and its model.
public struct AgentSpec: Codable, Sendable, Equatable {
    public var id: String?
    public var brain: TaskSpec
    public var policy: Policy?
    public var model: ModelEndpoint?

    public init(id: String? = nil, brain: TaskSpec, policy: Policy? = nil, model: ModelEndpoint? = nil) {
        self.id = id
        self.brain = brain
        self.policy = policy
        self.model = model
    }

    static let loopbackHosts: Set<String> = ["127.0.0.1", "localhost", "::1", "[::1]"]

    /// Why a task the brain starts (an effect, or a task of a swarm it spawns) may not run: it
    /// names the model's secret. The agent's policy allows that secret (the node adds it to
    /// model calls), so without this a brain could start an effect that prints the key.
    func refusal(ofBrainTaskSecrets secrets: [String]?) -> String? {
        guard let model, (secrets ?? []).contains(model.secret) else { return nil }
        return "secrets: \(model.secret) is the agent's model key: the node adds it to model calls and gives it to no task a brain starts"
    }

    /// Why the spec cannot be run, or nil. `checkingID`: as `TaskLimits.validate`'s (false for
    /// a spec read back from its session's creation record).
    func refusal(checkingID: Bool = true) -> String? {
        do throws(InvalidTask) { try TaskLimits.validate(brain, checkingID: checkingID) } catch { return "brain: \(error)" }
        if let policy {
            do throws(PolicyDenial) { try policy.validate() } catch { return "policy: \(error.description)" }
        }
        if brain.net == .host { return "brain: a brain has no network (net: none); its model calls go through its socket" }
        if !(brain.secrets ?? []).isEmpty {
            return "brain: a brain holds no secrets; the node adds the model's key, and effects name the secrets they need"
        }
        for name in (brain.env ?? [:]).keys where AgentLimits.reservedEnvironment.contains(name) {
            return "brain: env \(name) is set by the node"
        }
        if let model {
            guard let url = URL(string: model.baseURL), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                  let host = url.host, model.baseURL.utf8.count <= 2_048 else {
                return "model.baseURL: an http or https URL of at most 2048 bytes"
            }
            // The node sends the API key with every call: in clear text only to this machine.
            guard scheme == "https" || Self.loopbackHosts.contains(host.lowercased()) else {
                return "model.baseURL: https (plain http only to 127.0.0.1, ::1 or localhost): the node sends the model's key with every call"
            }
            guard !model.secret.isEmpty, model.secret.unicodeScalars.count <= 255 else { return "model.secret: the name of a node secret" }
        }
        return nil
    }
}

/// Every bound of the agents feature in one place.
public enum AgentLimits {
    /// A model call's request body, as the brain sends it.
    public static let maxModelRequestBytes = 1 << 20
    /// A model's answer read from the endpoint (what is recorded must also fit the journal's
    /// effect bound, `SessionLimits.maxEffectBytes`).
    public static let maxModelResponseBytes = 1 << 20
    /// How long the node waits for the model.
    public static let modelTimeout = Duration.seconds(120)
    /// Runs of one model call or swarm spawn under derived keys after a recorded failure or an
    /// unknown outcome.
    public static let maxCallAttempts = 4
    /// An `Idempotency-Key` header's length (printable ASCII).
    public static let maxIdempotencyKeyBytes = 100
    /// The brain's stderr the owner keeps, and the tail of it recorded in its end record.
    public static let maxLogBytes = 64 << 10
    public static let recordedLogTailBytes = 6 << 10
    /// The tail of the brain's stdout recorded in its end record: its answer, shown as `output`.
    public static let recordedOutputTailBytes = 4 << 10
    /// Agents running on one node at once.
    public static let maxRunningBrains = 256
    /// Names the node sets in a brain's environment.
    public static let reservedEnvironment: Set<String> = ["STARLING_SESSION", "STARLING_AGENT", "STARLING_EFFECT_KEY"]
}

/// The journal keys the node itself writes in an agent's session. A brain's own effect keys may
/// not start with any of these prefixes, so it can neither forge nor pre-empt them.
enum AgentKeys {
    static let model = "model/"
    static let swarm = "swarm/"
    static let start = "starling.agent.start/"
    static let end = "starling.agent.end"
    static let reservedPrefixes = [model, swarm, SessionLimits.hostKeyPrefix]

    static func isReserved(_ key: String) -> Bool { reservedPrefixes.contains { key.hasPrefix($0) } }

    /// The key a call is journaled under: its `Idempotency-Key` if it gave one, else a hash of its body.
    static func callKey(prefix: String, idempotencyKey: String?, body: [UInt8]) -> String {
        if let idempotencyKey { return prefix + idempotencyKey }
        return prefix + blake2bHex(body)
    }

    /// The key of the `attempt`-th run of a call (0: its own key).
    static func attemptKey(_ key: String, _ attempt: Int) -> String { attempt == 0 ? key : "\(key)~\(attempt)" }

    static func validIdempotencyKey(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.count <= AgentLimits.maxIdempotencyKeyBytes && key.utf8.allSatisfy { (0x21...0x7e).contains($0) }
    }
}

func blake2bHex(_ bytes: [UInt8]) -> String {
    blake2b(bytes).map { String(format: "%02x", $0) }.joined()
}

/// The effects the node runs itself for an agent (`BuiltinEffects`). Their stored form is this
/// JSON, never a TaskSpec: a model call or a swarm spawn stores only the digest of its body (the
/// body may be larger than a journal entry, and it stays out of the journal); the start and end
/// records store what they say.
struct BuiltinEffect: Codable, Equatable {
    enum Kind: String, Codable { case model, swarm, start, end }
    var starlingBuiltin: Kind
    var digest: String?
    /// `end`: the agent's final state (done, failed, stopped), exit code, why, and the tail of
    /// its stderr; `start`: the node that started it.
    var state: String?
    var exitCode: Int32?
    var reason: String?
    var stderrTail: String?
    var node: String?
    /// `end`: the tail of the brain's stdout (its answer, by convention).
    var stdoutTail: String?
}

/// What a model call or swarm spawn recorded: the HTTP status and body handed to the brain.
struct CallOutcome: Codable, Equatable {
    var status: Int
    var body: String
    /// Tokens the call used (`usage.total_tokens`), for the metric of tokens saved by replay.
    var tokens: Int?

    var succeeded: Bool { (200..<300).contains(status) }

    /// Most tokens one answer may claim (for the tokens-saved metric).
    static let maxTokens = 1 << 40

    /// `usage.total_tokens` of a model's answer, within 0...maxTokens; nil when it has none.
    static func usageTokens(_ text: String) -> Int? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
              let usage = object["usage"] as? [String: Any], let number = usage["total_tokens"] as? NSNumber else { return nil }
        let value = number.doubleValue
        guard value.isFinite else { return nil }
        return Int(min(max(0, value), Double(maxTokens)))
    }

    /// The status the brain is answered with: the model's when it is a final HTTP status
    /// (200–599), else 502 (a model's 1xx or odd code is not passed on).
    var answerStatus: Int { (200...599).contains(status) ? status : 502 }
}

/// The agent states of interface.md.
enum AgentState: String {
    /// `waiting`: the brain runs and waits for its model (a model call is in flight on the node).
    case starting, running, waiting, done, failed, stopped
}
