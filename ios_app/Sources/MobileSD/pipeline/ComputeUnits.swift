/// Where Core ML may run the graphs (`MLModelConfiguration.computeUnits`); the CLI's --compute-units.
public enum ComputeUnits: String, CaseIterable, Sendable {
    case cpuAndNeuralEngine, cpuAndGPU, all, cpuOnly

    /// The latency report's accelerator for this choice.
    public var accelerator: String {
        switch self {
        case .cpuAndNeuralEngine, .all: return "ane"
        case .cpuAndGPU: return "gpu"
        case .cpuOnly: return "cpu"
        }
    }

    public static func named(_ name: String) throws -> ComputeUnits {
        guard let u = ComputeUnits(rawValue: name) else {
            throw MobileSDError("unknown compute units '\(name)'",
                                fix: "use one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return u
    }
}
