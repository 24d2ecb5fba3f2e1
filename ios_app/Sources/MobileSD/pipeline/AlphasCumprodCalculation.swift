import Foundation

/// The training noise schedule every diffusers scheduler builds in its constructor: betas, alphas_cumprod
/// and the sigma table, in the dtypes diffusers uses (float32 tensors; torch's cumprod accumulates in double).
struct AlphasCumprodCalculation {
    let betas: [Float]
    let alphasCumprod: [Float]

    /// `zeroSNRTerminal`: DPM-Solver and Euler set the last alphas_cumprod to 2^-24 after a zero-SNR rescale.
    init(config c: SchedulerConfig, zeroSNRTerminal: Bool = false) {
        var betas: [Float]
        let n = c.numTrainTimesteps
        if let trained = c.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            switch c.betaSchedule {
            case "scaled_linear":
                betas = Self.torchLinspace(Float(pow(c.betaStart, 0.5)), Float(pow(c.betaEnd, 0.5)), n).map { $0 * $0 }
            case "squaredcos_cap_v2":
                betas = Self.betasForAlphaBar(n)
            default:
                betas = Self.torchLinspace(Float(c.betaStart), Float(c.betaEnd), n)
            }
        }
        if c.rescaleBetasZeroSNR { betas = Self.rescaleZeroTerminalSNR(betas) }
        var cumprod = Self.cumprod(betas.map { 1 - $0 })
        if c.rescaleBetasZeroSNR && zeroSNRTerminal { cumprod[cumprod.count - 1] = Float(1.0 / 16_777_216.0) }
        self.betas = betas
        self.alphasCumprod = cumprod
    }

    /// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, float32.
    var sigmas: [Float] { alphasCumprod.map { ((1 - $0) / $0).squareRoot() } }

    /// torch.linspace for float32 on CPU: `start + step * i` for the first half and `end - step * (n - 1 - i)` for
    /// the second, each a fused multiply-add (ATen's kernel, contracted), with `step` rounded to float first.
    static func torchLinspace(_ start: Float, _ end: Float, _ steps: Int) -> [Float] {
        guard steps > 1 else { return steps == 1 ? [start] : [] }
        let step = (end - start) / Float(steps - 1)
        let halfway = steps / 2
        return (0..<steps).map { i in
            i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - i - 1))
        }
    }

    /// torch.cumprod of a float32 tensor on CPU: accumulated in double, each partial product rounded to float.
    static func cumprod(_ values: [Float]) -> [Float] {
        var acc = 1.0
        return values.map { v in
            acc *= Double(v)
            return Float(acc)
        }
    }

    /// diffusers' betas_for_alpha_bar (cosine), in double then rounded to float32 as torch.tensor does.
    static func betasForAlphaBar(_ n: Int, maxBeta: Double = 0.999) -> [Float] {
        func alphaBar(_ t: Double) -> Double { pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(min(1 - alphaBar(t2) / alphaBar(t1), maxBeta))
        }
    }

    /// diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, algorithm 1), in float32.
    static func rescaleZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var sqrtBar = cumprod(betas.map { 1 - $0 }).map { $0.squareRoot() }
        let first = sqrtBar[0], last = sqrtBar[sqrtBar.count - 1]
        let scale = first / (first - last)
        sqrtBar = sqrtBar.map { ($0 - last) * scale }
        let bar = sqrtBar.map { $0 * $0 }
        var alphas = [bar[0]]
        for i in 1..<bar.count { alphas.append(bar[i] / bar[i - 1]) }
        return alphas.map { 1 - $0 }
    }
}

/// numpy's arange / linspace / round / interp as diffusers' set_timesteps calls them (float64), so timesteps
/// come out exactly as the host's.
enum NumpySpacing {
    /// `np.arange(start, stop, step)` for floats: length ceil((stop - start) / step); numpy fills
    /// `start + i * delta` with delta = (start + step) - start.
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let length = Int(((stop - start) / step).rounded(.up))
        guard length > 0 else { return [] }
        if length == 1 { return [start] }
        let delta = (start + step) - start
        var out = [start, start + step]
        for i in 2..<max(length, 2) { out.append(start + Double(i) * delta) }
        return Array(out.prefix(length))
    }

    /// `np.linspace(start, stop, num)` (endpoint included): `i * step + start`, the last element `stop`.
    static func linspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
        guard num > 1 else { return num == 1 ? [start] : [] }
        let step = (stop - start) / Double(num - 1)
        var out = (0..<num).map { Double($0) * step + start }
        out[num - 1] = stop
        return out
    }

    /// `np.round`: half to even.
    static func round(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// `np.interp(x, arange(len(fp)), fp)`.
    static func interp(_ x: Double, _ fp: [Float]) -> Double {
        let last = fp.count - 1
        if x <= 0 { return Double(fp[0]) }
        if x >= Double(last) { return Double(fp[last]) }
        let j = Int(x.rounded(.down))
        if x == Double(j) { return Double(fp[j]) }
        let slope = (Double(fp[j + 1]) - Double(fp[j])) / 1.0
        return slope * (x - Double(j)) + Double(fp[j])
    }
}
