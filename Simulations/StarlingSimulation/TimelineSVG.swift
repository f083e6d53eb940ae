/// Draws a run over time: one row per member, one column per period, coloured by how many of
/// the others see that member alive (green: all, red: none), with faults marked.
public enum TimelineSVG {
    public static func render(_ sim: Simulator, report: SimulationReport) -> String {
        let timeline = sim.checker.timeline
        let n = sim.config.nodes
        let periods = timeline.count
        let cell = max(2, min(12, 900 / max(1, periods)))
        let row = max(2, min(14, 480 / max(1, n)))
        let left = 60, top = 40
        let width = left + periods * cell + 20, height = top + n * row + 60
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="monospace" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="16">\(report.scenario): \(n) nodes, seed \(report.seed), lifeguard \(report.lifeguard ? "on" : "off"), trace \(report.traceHash)</text>
        <text x="\(left)" y="30">cell colour: share of the other members that see this member alive (green all, red none)</text>

        """
        for (p, counts) in timeline.enumerated() {
            for (i, c) in counts.enumerated() {
                let share = n > 1 ? Double(c) / Double(n - 1) : 1
                let red = Int(220 * (1 - share)), green = Int(60 + 150 * share)
                out += "<rect x=\"\(left + p * cell)\" y=\"\(top + i * row)\" width=\"\(cell)\" height=\"\(row)\" fill=\"rgb(\(red),\(green),70)\"/>\n"
            }
        }
        for i in stride(from: 0, to: n, by: max(1, n / 10)) {
            out += "<text x=\"4\" y=\"\(top + i * row + row)\">n\(i)</text>\n"
        }
        var labelled = Set<Int>()
        for (period, label) in sim.checker.faultMarks {
            let x = left + Int(period * Double(cell))
            out += "<line x1=\"\(x)\" y1=\"\(top - 4)\" x2=\"\(x)\" y2=\"\(top + n * row + 4)\" stroke=\"black\" stroke-dasharray=\"3,2\"/>\n"
            if labelled.insert(Int(period)).inserted, labelled.count <= 12 {
                out += "<text x=\"\(x + 2)\" y=\"\(top + n * row + 18 + (labelled.count % 3) * 12)\">\(escape(label))</text>\n"
            }
        }
        out += "<text x=\"\(left)\" y=\"\(height - 6)\">periods 0-\(periods - 1) (1 period = one probe interval)</text>\n</svg>\n"
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;")
    }
}

extension String {
    func replacingAll(_ a: String, _ b: String) -> String { split(separator: a, omittingEmptySubsequences: false).joined(separator: b) }
}
