/// A dense tensor in C order: what the graphs take and return. Float32 for everything but token ids (int32).
public struct Tensor: Sendable {
    public enum DType: String, Sendable {
        case float32, int32
    }

    public enum Storage: Sendable {
        case float32([Float])
        case int32([Int32])
    }

    public var shape: [Int]
    public var storage: Storage

    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) elements")
        self.shape = shape
        self.storage = .float32(floats)
    }

    public init(shape: [Int], ints: [Int32]) {
        precondition(shape.reduce(1, *) == ints.count, "shape \(shape) does not hold \(ints.count) elements")
        self.shape = shape
        self.storage = .int32(ints)
    }

    public var dtype: DType {
        switch storage {
        case .float32: return .float32
        case .int32: return .int32
        }
    }

    public var count: Int { shape.reduce(1, *) }

    /// The float32 elements (a programming error on an int32 tensor).
    public var floats: [Float] {
        guard case .float32(let f) = storage else { preconditionFailure("tensor is int32, not float32") }
        return f
    }

    public var ints: [Int32] {
        guard case .int32(let i) = storage else { preconditionFailure("tensor is float32, not int32") }
        return i
    }

    /// Tensors of the same trailing shape stacked along dimension 0 (the CFG batch [unconditional, conditional]).
    public static func concatenatingBatch(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        let tail = Array(parts[0].shape.dropFirst())
        var floats: [Float] = []
        floats.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        var batch = 0
        for p in parts {
            precondition(Array(p.shape.dropFirst()) == tail, "cannot stack \(p.shape) with \(parts[0].shape)")
            floats.append(contentsOf: p.floats)
            batch += p.shape.first ?? 1
        }
        return Tensor(shape: [batch] + tail, floats: floats)
    }

    /// Item `index` of dimension 0, keeping a batch dimension of 1.
    public func batchItem(_ index: Int) -> Tensor {
        let batch = shape.first ?? 1
        precondition(index < batch, "batch item \(index) of \(shape)")
        let per = count / batch
        let f = floats
        return Tensor(shape: [1] + shape.dropFirst(), floats: Array(f[index * per..<(index + 1) * per]))
    }
}
