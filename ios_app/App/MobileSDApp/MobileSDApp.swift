import SwiftUI

/// The MobileSD sample app: pick a bundle from the app's Documents, type a prompt, Generate; Benchmark runs the
/// latency-report protocol and shares the report. All the work is the MobileSD package's; this is the screen.
@main
struct MobileSDApp: App {
    @State private var model = GenerationModel()

    var body: some Scene {
        WindowGroup {
            ContentView(model: model)
        }
    }
}
