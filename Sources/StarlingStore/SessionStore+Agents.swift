import Foundation
import GRDB

extension SessionStore {
    /// The sessions held here whose creation record's options mention `marker` (an agent's
    /// session carries its spec there), with those options: the agents this node may have to
    /// run if it comes to own their session. At most `limit` of them, by id.
    public func creationOptions(containing marker: String, limit: Int = 4_096) throws -> [(id: String, options: [UInt8])] {
        do {
            return try pool.read { db in
                // `session.options` (migration v7): a compacted session has no create record.
                let rows = try Row.fetchAll(db, sql: """
                    SELECT id, options AS content FROM session
                    WHERE options IS NOT NULL AND instr(options, CAST(? AS BLOB)) > 0
                    ORDER BY id LIMIT ?
                    """, arguments: [marker, limit])
                return try rows.map { row in
                    (id: try row.decode(String.self, forColumn: "id"), options: [UInt8](try row.decode(Data.self, forColumn: "content")))
                }
            }
        } catch {
            throw StoreError("session store read failed: \(error)")
        }
    }
}
