import Foundation

/// torch's CPU `torch.randn` (float32) for a seed, bit for bit, so a seed gives the host's image on a phone.
///
/// A port of mobilesd/torch_random.py (the specification, checked against torch on the writing host), which
/// describes ATen's `normal_kernel`: 16 elements or more take 24-bit uniforms and Box-Muller over blocks of 16
/// with the Cephes float log/sin/cos of the AVX2/AVX-512 code (re-drawing the last 16 when the size is not a
/// multiple of 16); fewer than 16 take the double-precision scalar path, which keeps its second value for the
/// next scalar draw. The stream continues across calls, like a generator passed on to `scheduler.step`.
public final class TorchRandomSource: RandomSource {
    private var generator: MT19937
    private var cachedNormal: Double?

    public init(seed: UInt64) {
        generator = MT19937(seed: seed)
    }

    public func normal(count: Int) -> [Float] {
        if count < 16 {
            return (0..<count).map { _ in Float(normalDouble()) }
        }
        var data = uniforms(count)
        var i = 0
        while i + 16 <= count {
            boxMuller16(&data, at: i)
            i += 16
        }
        if count % 16 != 0 {
            var tail = uniforms(16)
            boxMuller16(&tail, at: 0)
            data.replaceSubrange((count - 16)..<count, with: tail)
        }
        return data
    }

    private func uniforms(_ n: Int) -> [Float] {
        let scale = Float(1.0 / 16_777_216.0)
        return (0..<n).map { _ in Float(generator.nextUInt32() & 0xFF_FFFF) * scale }
    }

    private func boxMuller16(_ data: inout [Float], at base: Int) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let u1 = 1 - data[base + j]
            let radius = (-2 * CephesMath.log(u1)).squareRoot()
            let theta = twoPi * data[base + j + 8]
            let (s, c) = CephesMath.sincos(theta)
            data[base + j] = radius * c
            data[base + j + 8] = radius * s
        }
    }

    /// One `normal_distribution<double>` draw (glibc's log1p, sin, cos, as Python's math module calls them).
    private func normalDouble() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let mask: UInt64 = (1 << 53) - 1
        let u1 = Double(generator.nextUInt64() & mask) * 0x1p-53
        let u2 = Double(generator.nextUInt64() & mask) * 0x1p-53
        let r = (-2.0 * Foundation.log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }
}
