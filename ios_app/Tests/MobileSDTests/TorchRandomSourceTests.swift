import Foundation
import XCTest
@testable import MobileSD

/// torch.randn bit for bit (golden section "randn"): every case, and one generator drawing several shapes.
final class TorchRandomSourceTests: XCTestCase {
    func testEveryCaseBitExact() throws {
        let g = try GoldenVectors.shared()
        let section = try g.section("randn")
        let cases = section["cases"]?.array ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 10)
        for c in cases {
            let seed = UInt64(c["seed"]!.double!)
            let shape = (c["shape"]?.array ?? []).compactMap(\.int)
            let expected = try g.floats(c["values"])
            let got = TorchRandomSource(seed: seed).normal(shape: shape)
            XCTAssertEqual(got.count, expected.count)
            let mismatches = zip(got, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(mismatches, 0, "seed \(seed) shape \(shape): \(mismatches) of \(expected.count) values differ")
        }
    }

    func testStreamContinuesAcrossDraws() throws {
        let g = try GoldenVectors.shared()
        let stream = try g.section("randn")["stream"]!
        let source = TorchRandomSource(seed: UInt64(stream["seed"]!.double!))
        let draws = stream["draws"]?.array ?? []
        XCTAssertEqual(draws.count, 5)
        for (k, d) in draws.enumerated() {
            let shape = (d["shape"]?.array ?? []).compactMap(\.int)
            let expected = try g.floats(d["values"])
            let got = source.normal(shape: shape)
            XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "draw \(k) \(shape)")
        }
    }

    func testCephesLogMatchesLibmClosely() {
        // not the spec (the golden vectors are), a sanity check that the port is a logarithm
        for x: Float in [1e-7, 0.001, 0.25, 0.5, 0.70710677, 0.9, 1] {
            XCTAssertEqual(Double(CephesMath.log(x)), Foundation.log(Double(x)), accuracy: 2e-7 * max(1, abs(Foundation.log(Double(x)))))
        }
    }
}
