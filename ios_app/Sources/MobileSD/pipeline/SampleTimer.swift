/// Times repeated events with a monotonic clock and keeps every sample (as Apple's SampleTimer does), with the
/// statistics latency reports need.
public final class SampleTimer {
    private var start: ContinuousClock.Instant?
    public private(set) var samples: [Double] = []

    public init() {}

    public func start(at instant: ContinuousClock.Instant = .now) { start = instant }

    @discardableResult public func stop() -> Double {
        guard let start else { return 0 }
        let elapsed = (ContinuousClock.now - start).seconds
        samples.append(elapsed)
        self.start = nil
        return elapsed
    }

    public func add(_ seconds: Double) { samples.append(seconds) }

    public var count: Int { samples.count }
    public var mean: Double { samples.isEmpty ? 0 : samples.reduce(0, +) / Double(samples.count) }
    public var median: Double { Statistics.median(samples) }
}

/// The statistics of a latency report's stage, as mobilesd.latency.schema.stage_stats computes them.
public enum Statistics {
    public static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        let (q, r) = s.count.quotientAndRemainder(dividingBy: 2)
        return r == 1 ? s[q] : (s[q - 1] + s[q]) / 2
    }

    /// Sample standard deviation (n - 1); 0 for one sample.
    public static func stdev(_ xs: [Double]) -> Double {
        guard xs.count > 1 else { return 0 }
        let m = xs.reduce(0, +) / Double(xs.count)
        return (xs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(xs.count - 1)).squareRoot()
    }

    /// Python's statistics.quantiles(xs, n=10, method="inclusive")[-1].
    public static func p90(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        let m = s.count - 1
        let j = 9 * m / 10, delta = 9 * m - j * 10
        guard j + 1 < s.count else { return s[j] }
        return (s[j] * Double(10 - delta) + s[j + 1] * Double(delta)) / 10
    }
}
