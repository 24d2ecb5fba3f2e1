import Foundation
import XCTest
@testable import MobileSD

/// The stored-deflate PNG: CRC-32 and Adler-32 against known values, and a decode of what it writes.
final class PNGWriterTests: XCTestCase {
    func testChecksums() {
        XCTAssertEqual(PNGWriter.crc32(Array("IEND".utf8)), 0xAE42_6082)
        XCTAssertEqual(PNGWriter.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(PNGWriter.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
    }

    func testWritesADecodablePNG() throws {
        let w = 300, h = 250   // more than one 64 KiB stored block
        var rgba = [UInt8](repeating: 255, count: w * h * 4)
        for i in 0..<(w * h) { rgba[i * 4] = UInt8(i % 256); rgba[i * 4 + 1] = UInt8(i / 256 % 256); rgba[i * 4 + 2] = 7 }
        let png = [UInt8](PNGWriter.encode(RawImage(width: w, height: h, rgba: rgba)))
        XCTAssertEqual(Array(png[0..<8]), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // walk the chunks, check every CRC, collect IDAT
        var p = 8, idat: [UInt8] = [], types: [String] = []
        while p < png.count {
            let n = Int(png[p]) << 24 | Int(png[p + 1]) << 16 | Int(png[p + 2]) << 8 | Int(png[p + 3])
            let type = String(decoding: png[(p + 4)..<(p + 8)], as: UTF8.self)
            let crc = UInt32(png[p + 8 + n]) << 24 | UInt32(png[p + 9 + n]) << 16 | UInt32(png[p + 10 + n]) << 8 | UInt32(png[p + 11 + n])
            XCTAssertEqual(crc, PNGWriter.crc32(png[(p + 4)..<(p + 8 + n)]), type)
            if type == "IDAT" { idat += png[(p + 8)..<(p + 8 + n)] }
            types.append(type)
            p += 12 + n
        }
        XCTAssertEqual(types, ["IHDR", "IDAT", "IEND"])
        // inflate the stored blocks
        XCTAssertEqual((Int(idat[0]) << 8 | Int(idat[1])) % 31, 0)
        var q = 2, raw: [UInt8] = [], final = false
        while !final {
            final = idat[q] & 1 == 1
            XCTAssertEqual(idat[q] >> 1 & 3, 0, "stored block")
            let len = Int(idat[q + 1]) | Int(idat[q + 2]) << 8, nlen = Int(idat[q + 3]) | Int(idat[q + 4]) << 8
            XCTAssertEqual(len ^ 0xFFFF, nlen)
            raw += idat[(q + 5)..<(q + 5 + len)]
            q += 5 + len
        }
        let adler = UInt32(idat[q]) << 24 | UInt32(idat[q + 1]) << 16 | UInt32(idat[q + 2]) << 8 | UInt32(idat[q + 3])
        XCTAssertEqual(adler, PNGWriter.adler32(raw))
        XCTAssertEqual(raw.count, h * (w * 3 + 1))
        for y in [0, 1, h - 1] {
            XCTAssertEqual(raw[y * (w * 3 + 1)], 0, "filter none")
            for x in [0, w - 1] {
                let i = y * w + x, o = y * (w * 3 + 1) + 1 + x * 3
                XCTAssertEqual(Array(raw[o..<(o + 3)]), [rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2]])
            }
        }
    }

    func testPixelsAreRoundedAndClamped() {
        // round(x * 255) as numpy does (127.5 -> 128), clamped to 0...255
        let img = RawImage(nhwc: [0, 0.5, 1, -0.1, 1.2, 0.25], width: 2, height: 1)
        XCTAssertEqual(Array(img.rgba[0..<4]), [0, 128, 255, 255])
        XCTAssertEqual(Array(img.rgba[4..<8]), [0, 255, 64, 255])
    }
}
