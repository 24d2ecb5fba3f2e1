import CoreGraphics
import Foundation
import MobileSD
import Observation

/// The screen's state: the bundles found in Documents, the settings, and the last image and timings.
@MainActor @Observable
final class GenerationModel {
    var bundles: [URL] = []
    var selectedBundle: URL?
    var prompt = "a photo of an astronaut riding a horse on mars"
    var negativePrompt = ""
    var steps = 20
    var guidance = 7.5
    var seed = 0
    var scheduler: SchedulerKind = .dpm
    var schedulers: [SchedulerKind] = SchedulerKind.allCases
    var computeUnits: ComputeUnits = .cpuAndNeuralEngine
    var reduceMemory = false

    var status = "Copy a bundle folder into this app's Documents (Files app or Finder), then choose it."
    var busy = false
    var image: CGImage?
    var timings: [Timing] = []
    var reportURL: URL?

    private let service = PipelineService()

    var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }

    /// Folders in Documents that hold a manifest.json.
    func refreshBundles() {
        let fm = FileManager.default
        let entries = (try? fm.contentsOfDirectory(at: documents, includingPropertiesForKeys: [.isDirectoryKey])) ?? []
        bundles = entries.filter { fm.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        if selectedBundle == nil || !bundles.contains(selectedBundle!) { selectedBundle = bundles.first }
    }

    private var configuration: GenerationConfiguration {
        GenerationConfiguration(prompt: prompt, negativePrompt: negativePrompt, steps: steps, guidance: guidance,
                                seed: UInt64(max(seed, 0)), scheduler: scheduler)
    }

    private func prepare() async throws {
        guard let url = selectedBundle else { throw MobileSDError("no bundle chosen", fix: "copy one into Documents") }
        status = "Verifying and loading \(url.lastPathComponent) (the first launch compiles the models)..."
        let info = try await service.prepare(bundle: url, computeUnits: computeUnits, reduceMemory: reduceMemory)
        schedulers = info.schedulers
        if !schedulers.contains(scheduler) { scheduler = info.defaultScheduler }
        timings = [Timing("verify (SHA-256)", info.verifySeconds), Timing("compile", info.load.compileSeconds),
                   Timing("load", info.load.loadSeconds)]
    }

    func generate() {
        run { model in
            try await model.prepare()
            let (image, times) = try await model.service.generate(model.configuration) { step, steps in
                Task { @MainActor in model.status = "Step \(step) of \(steps)" }
            }
            model.show(image, times)
            model.status = String(format: "Done in %.2f s", times.endToEnd)
        }
    }

    func benchmark() {
        run { model in
            try await model.prepare()
            model.status = "Benchmark: 1 warm-up + 3 timed generations..."
            let (image, times, url) = try await model.service.benchmark(
                model.configuration, warmup: 1, repeats: 3, directory: model.documents.appendingPathComponent("reports"))
            model.show(image, times)
            model.reportURL = url
            model.status = "Report written: \(url.lastPathComponent)"
        }
    }

    private func show(_ image: RawImage, _ times: StageTimes) {
        self.image = image.cgImage
        let step = times.steps.isEmpty ? 0 : times.steps.sorted()[times.steps.count / 2]
        timings = Array(timings.prefix(3)) + [Timing("text encoder", times.textEncoder), Timing("UNet step (median)", step),
                                              Timing("decoder", times.decoder), Timing("end to end", times.endToEnd)]
    }

    private func run(_ work: @escaping @MainActor (GenerationModel) async throws -> Void) {
        guard !busy else { return }
        busy = true
        Task {
            do { try await work(self) } catch { status = "\(error)" }
            busy = false
        }
    }
}

/// One line of the timing list.
struct Timing: Identifiable {
    let name: String
    let seconds: Double
    var id: String { name }

    init(_ name: String, _ seconds: Double) {
        self.name = name
        self.seconds = seconds
    }
}
