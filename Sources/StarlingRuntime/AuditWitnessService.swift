import Foundation
import Logging
import Metrics
import StarlingCore
import StarlingStore

/// Hosts `AuditWitness` on a node: its heads go to its ring successors, it keeps the heads its
/// peers send, and after a start it checks its own log against what its peers witnessed.
public enum AuditWitnessService {
    /// Registers the protocol on `node` (before it starts).
    public static func register(on node: MeshNode, audit: AuditLog, interval: Duration, logger: Logger) {
        let settings = AuditWitness.Settings(interval: interval)
        _ = node.register(AuditWitness(myName: node.configuration.name, settings: settings, now: node.now),
                          performer: AuditWitnessPerformer(audit: audit, logger: logger))
    }
}

/// Carries out the witness protocol's actions on the loop thread: each is one small indexed
/// SQLite read or write, and the pure protocol bounds how often a peer's head gets here.
struct AuditWitnessPerformer: ProtocolPerformer {
    typealias Hosted = AuditWitness
    let audit: AuditLog
    let logger: Logger
    let refused = Counter(label: "starling_audit_witness_refused_total")
    let contradicted = Counter(label: "starling_audit_contradicted_total")

    func perform(_ action: AuditWitness.Action, host: ProtocolHandle<AuditWitness>) {
        switch action {
        case .readOwnHead:
            let head = audit.currentHead.map { AuditWitness.Head(seq: $0.seq, hash: $0.hash, signature: $0.signature, publicKey: audit.publicKey) }
            host.complete(.ownHead(head))
        case .store(let head, let peer):
            do {
                try audit.witness(node: peer, publicKey: head.publicKey, head: Self.auditHead(head),
                                  receivedAtMs: UInt64(Date().timeIntervalSince1970 * 1000))
            } catch {
                // A bad signature, another key under a known name, or a log that went back: kept
                // out, counted and logged; the head witnessed before stays as the evidence.
                refused.increment()
                logger.warning("refused an audit head", metadata: ["peer": "\(peer)", "seq": "\(head.seq)", "error": "\(error)"])
            }
        case .lookUp(let peer, let token):
            // A read that fails answers "none": the asking peer learns nothing, and asks nobody else
            // less for it (it asks every alive peer).
            let found = (try? audit.witnessedHead(of: peer)).flatMap { $0 }
            host.complete(.witnessedHead(found.map { AuditWitness.Head(seq: $0.head.seq, hash: $0.head.hash, signature: $0.head.signature,
                                                                         publicKey: $0.publicKey) }, for: token))
        case .check(let head, let peer):
            do {
                if try !audit.check(witnessed: Self.auditHead(head), by: peer) {
                    refused.increment()
                    logger.warning("a peer offered a head of this log that this node did not sign", metadata: ["peer": "\(peer)"])
                }
            } catch {
                contradicted.increment()
                logger.critical("the audit log contradicts a peer's witness", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        case .refuse(let head, let peer, let reason):
            refused.increment()
            logger.warning("refused an audit head", metadata: ["peer": "\(peer)", "seq": "\(head.seq)", "error": "\(reason)"])
        }
    }

    static func auditHead(_ h: AuditWitness.Head) -> AuditHead { AuditHead(seq: h.seq, hash: h.hash, signature: h.signature) }
}
