/// A source of standard normal samples for the initial latent and for schedulers that draw noise every
/// step (LCM). A class: one generator's state runs on through a whole generation, as torch's does.
public protocol RandomSource: AnyObject {
    /// `count` samples, as `torch.randn(shape, generator=g)` returns them for a shape of `count` elements.
    func normal(count: Int) -> [Float]
}

extension RandomSource {
    public func normal(shape: [Int]) -> [Float] { normal(count: shape.reduce(1, *)) }
}
