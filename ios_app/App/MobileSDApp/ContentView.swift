import MobileSD
import SwiftUI

/// Prompt, settings, Generate, the image, per-stage timing, and Benchmark with a share button for the report.
struct ContentView: View {
    @Bindable var model: GenerationModel

    var body: some View {
        NavigationStack {
            Form {
                Section("Bundle") {
                    Picker("Bundle", selection: $model.selectedBundle) {
                        ForEach(model.bundles, id: \.self) { Text($0.lastPathComponent).tag(Optional($0)) }
                    }
                    Button("Refresh") { model.refreshBundles() }
                }
                Section("Prompt") {
                    TextField("Prompt", text: $model.prompt, axis: .vertical)
                    TextField("Negative prompt", text: $model.negativePrompt)
                }
                Section("Settings") {
                    Stepper("Steps: \(model.steps)", value: $model.steps, in: 1...50)
                    VStack(alignment: .leading) {
                        Text(String(format: "Guidance: %.1f", model.guidance))
                        Slider(value: $model.guidance, in: 1...15, step: 0.5)
                    }
                    TextField("Seed", value: $model.seed, format: .number).keyboardType(.numberPad)
                    Picker("Scheduler", selection: $model.scheduler) {
                        ForEach(model.schedulers, id: \.self) { Text($0.rawValue).tag($0) }
                    }
                    Picker("Compute units", selection: $model.computeUnits) {
                        ForEach(ComputeUnits.allCases, id: \.self) { Text($0.rawValue).tag($0) }
                    }
                    Toggle("Reduce memory (load one stage at a time)", isOn: $model.reduceMemory)
                }
                Section {
                    HStack {
                        Button("Generate") { model.generate() }.disabled(model.busy || model.selectedBundle == nil)
                        Spacer()
                        Button("Benchmark") { model.benchmark() }.disabled(model.busy || model.selectedBundle == nil)
                        if let url = model.reportURL {
                            ShareLink(item: url) { Image(systemName: "square.and.arrow.up") }
                        }
                    }
                    Text(model.status).font(.footnote).foregroundStyle(.secondary)
                }
                if let image = model.image {
                    Section("Image") {
                        Image(decorative: image, scale: 1).resizable().interpolation(.none).scaledToFit()
                    }
                }
                if !model.timings.isEmpty {
                    Section("Timing (seconds)") {
                        ForEach(model.timings) { t in
                            LabeledContent(t.name, value: String(format: "%.3f", t.seconds))
                        }
                    }
                }
            }
            .navigationTitle("MobileSD")
            .onAppear { model.refreshBundles() }
        }
    }
}
