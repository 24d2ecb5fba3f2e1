import Foundation

/// A PNG encoder (8-bit RGB, no interlace) whose zlib stream uses stored (uncompressed) deflate blocks.
/// Written by hand because the Linux build has no zlib headers (the chroot carries only what the Swift build
/// and ONNX Runtime need) and Foundation has no image encoder there; a stored stream is valid PNG that every
/// decoder reads, at the raw size (768 KiB for 512x512). CRC-32 (chunks) and Adler-32 (zlib) are computed here.
/// Apple apps can use ImageIO with `RawImage.cgImage` for compressed files.
public enum PNGWriter {
    public static func encode(_ image: RawImage) -> Data {
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.appendBigEndian(UInt32(image.width))
        header.appendBigEndian(UInt32(image.height))
        header.append(contentsOf: [8, 2, 0, 0, 0])   // 8 bits, colour type 2 (RGB), deflate, filter 0, no interlace
        appendChunk("IHDR", header, to: &png)
        // scanlines: filter byte 0 (none) + RGB
        let rgb = image.rgb
        var raw = [UInt8]()
        raw.reserveCapacity(image.height * (image.width * 3 + 1))
        for y in 0..<image.height {
            raw.append(0)
            raw.append(contentsOf: rgb[(y * image.width * 3)..<((y + 1) * image.width * 3)])
        }
        appendChunk("IDAT", zlibStored(raw), to: &png)
        appendChunk("IEND", Data(), to: &png)
        return png
    }

    /// Writes atomically: a failed write leaves no partial file under `url`.
    public static func write(_ image: RawImage, to url: URL) throws {
        try encode(image).write(to: url, options: .atomic)
    }

    static func zlibStored(_ bytes: [UInt8]) -> Data {
        var out = Data([0x78, 0x01])   // deflate, 32K window, no preset dictionary, level "fastest"; header % 31 == 0
        var offset = 0
        repeat {
            let n = min(65_535, bytes.count - offset)
            let final: UInt8 = offset + n == bytes.count ? 1 : 0
            out.append(final)   // BFINAL, BTYPE 00 (stored)
            out.append(UInt8(n & 0xFF)); out.append(UInt8(n >> 8))
            out.append(UInt8(~n & 0xFF)); out.append(UInt8((~n >> 8) & 0xFF))
            out.append(contentsOf: bytes[offset..<(offset + n)])
            offset += n
        } while offset < bytes.count
        out.appendBigEndian(adler32(bytes))
        return out
    }

    static func appendChunk(_ type: String, _ body: Data, to png: inout Data) {
        png.appendBigEndian(UInt32(body.count))
        let typed = Data(type.utf8) + body
        png.append(typed)
        png.appendBigEndian(crc32(typed))
    }

    static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func crc32<D: Sequence>(_ data: D) -> UInt32 where D.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    public static func adler32<D: Sequence>(_ data: D) -> UInt32 where D.Element == UInt8 {
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65_521
            b = (b + a) % 65_521
        }
        return (b << 16) | a
    }
}

extension Data {
    mutating func appendBigEndian(_ v: UInt32) {
        append(contentsOf: [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)])
    }
}
