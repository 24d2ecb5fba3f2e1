/// What to generate: prompt, negative prompt, steps, guidance, seed, scheduler (nil: the bundle's defaults).
public struct GenerationConfiguration: Sendable {
    public var prompt: String
    public var negativePrompt: String?
    public var steps: Int
    public var guidance: Double?
    public var seed: UInt64
    public var scheduler: SchedulerKind?

    public init(prompt: String, negativePrompt: String? = nil, steps: Int = 20, guidance: Double? = nil,
                seed: UInt64 = 0, scheduler: SchedulerKind? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.guidance = guidance
        self.seed = seed
        self.scheduler = scheduler
    }
}
