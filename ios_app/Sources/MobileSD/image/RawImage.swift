import Foundation
#if canImport(CoreGraphics)
import CoreGraphics
#endif

/// A generated image: 8-bit RGBA, row-major, alpha 255. Pixels are round(x * 255) of the decoder's [0, 1]
/// output (round half to even, like numpy), so they equal the host's PNG byte for byte when the floats agree.
public struct RawImage: Sendable {
    public let width: Int
    public let height: Int
    public let rgba: [UInt8]

    public init(width: Int, height: Int, rgba: [UInt8]) {
        precondition(rgba.count == width * height * 4)
        self.width = width
        self.height = height
        self.rgba = rgba
    }

    /// From the decoder's (H, W, 3) float pixels in [0, 1].
    public init(nhwc pixels: [Float], width: Int, height: Int) {
        var rgba = [UInt8](repeating: 255, count: width * height * 4)
        for p in 0..<(width * height) {
            for c in 0..<3 {
                let v = (pixels[p * 3 + c] * 255).rounded(.toNearestOrEven)
                rgba[p * 4 + c] = UInt8(min(max(v, 0), 255))
            }
        }
        self.init(width: width, height: height, rgba: rgba)
    }

    /// RGB bytes (alpha dropped), row-major.
    public var rgb: [UInt8] {
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for p in 0..<(width * height) {
            out[p * 3] = rgba[p * 4]
            out[p * 3 + 1] = rgba[p * 4 + 1]
            out[p * 3 + 2] = rgba[p * 4 + 2]
        }
        return out
    }

    #if canImport(CoreGraphics)
    /// The image for SwiftUI / UIKit / ImageIO.
    public var cgImage: CGImage? {
        guard let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
                       space: CGColorSpace(name: CGColorSpace.sRGB) ?? CGColorSpaceCreateDeviceRGB(),
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
    #endif
}
