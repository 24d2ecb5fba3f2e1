/// One generation's timings by latency-report stage (docs/latency-report.md): text_encoder, unet_step (one
/// per step, CFG and scheduler included), unet_chunk_<i> (summed over the step's calls), vae_decoder,
/// end_to_end; plus the time outside graph calls per step (the client's own overhead).
public struct StageTimes: Sendable {
    public var textEncoder = 0.0
    public var steps: [Double] = []
    /// per step, seconds per chunk index (both CFG calls summed in sequential mode)
    public var stepChunks: [[Double]] = []
    /// per step, seconds spent outside graph calls (scheduler, CFG, copies, chunk bookkeeping)
    public var stepOverhead: [Double] = []
    public var decoder = 0.0
    public var endToEnd = 0.0
    /// graph loads during this generation (reduceMemory mode)
    public var loads = LoadTiming()

    public init() {}
}
