/// The float32 log, sin and cos of ATen's AVX Box-Muller (`avx_mathfun.h`, after Cephes), step by step as
/// mobilesd/torch_random.py specifies them: float32 arithmetic, with exact fused multiply-adds where the
/// compiled code contracts `a * b + c` (`c.addingProduct(a, b)` rounds once, like the FMA instruction).
/// Constants are written as Double and rounded to Float, as numpy's `F32(python float)` does.
enum CephesMath {
    private static let logP: [Float] = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                        1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                        3.3333331174e-1].map { Float($0 as Double) }
    private static let logQ1 = Float(-2.12194440e-4 as Double)
    private static let logQ2 = Float(0.693359375 as Double)
    private static let sqrtHalf = Float(0.707106781186547524 as Double)
    private static let fourOverPi = Float(1.27323954473516 as Double)
    private static let minusPiOver4: [Float] = [-0.78515625, -2.4187564849853515625e-4,
                                                -3.77489497744594108e-8].map { Float($0 as Double) }
    private static let sinP: [Float] = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map { Float($0 as Double) }
    private static let cosP: [Float] = [2.443315711809948e-5, -1.388731625493765e-3,
                                        4.166664568298827e-2].map { Float($0 as Double) }

    /// a * b + c, rounded once.
    @inline(__always)
    private static func fma(_ a: Float, _ b: Float, _ c: Float) -> Float { c.addingProduct(a, b) }

    /// Cephes logf for x in (0, 1].
    static func log(_ input: Float) -> Float {
        var x = max(input, Float(bitPattern: 0x0080_0000))
        let bits = x.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 0x7F)
        x = Float(bitPattern: (bits & 0x807F_FFFF) | 0x3F00_0000)   // mantissa in [0.5, 1)
        e = e + 1
        let small = x < sqrtHalf
        e = e - (small ? 1 : 0)
        x = (x - 1) + (small ? x : 0)                                  // x - 1, or x + x - 1 below sqrt(1/2)
        let z = x * x
        var y = logP[0]
        for p in logP.dropFirst() { y = fma(y, x, p) }
        y = y * x
        y = fma(y, z, e * logQ1)
        y = fma(-z, 0.5, y)
        return fma(e, logQ2, x + y)
    }

    /// Cephes sinf and cosf with one range reduction for both.
    static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var sinNegative = input.sign == .minus
        var x = abs(input)
        var j = Int32(x * fourOverPi)                                 // truncation
        j = (j + 1) & ~1
        let y = Float(j)
        sinNegative = sinNegative != ((j & 4) != 0)
        let cosNegative = (~(j &- 2) & 4) != 0
        let firstPoly = (j & 2) == 0                                  // the cos polynomial gives cos (else they swap)
        for dp in minusPiOver4 { x = fma(y, dp, x) }
        let z = x * x
        var yc = cosP[0]
        yc = fma(yc, z, cosP[1])
        yc = fma(yc, z, cosP[2])
        yc = yc * z
        yc = fma(yc, z, -(z * 0.5)) + 1
        var ys = sinP[0]
        ys = fma(ys, z, sinP[1])
        ys = fma(ys, z, sinP[2])
        ys = fma(ys * z, x, x)
        let s = firstPoly ? ys : yc
        let c = firstPoly ? yc : ys
        return (sinNegative ? -s : s, cosNegative ? -c : c)
    }
}
