import Foundation

extension BPETokenizer {
    /// Reads vocab.json (token -> id) and merges.txt (one "a b" pair per line after a `#version` header).
    public convenience init(vocabularyURL: URL, mergesURL: URL, bosId: Int, eosId: Int, padId: Int,
                            maxLength: Int = 77, lowercase: Bool = true) throws {
        let vocab: [String: Int]
        do {
            vocab = try JSONDecoder().decode([String: Int].self, from: Data(contentsOf: vocabularyURL))
        } catch {
            throw MobileSDError("cannot read the tokenizer vocabulary \(vocabularyURL.path): \(error)",
                                fix: "re-export or re-copy the bundle")
        }
        guard let text = try? String(contentsOf: mergesURL, encoding: .utf8) else {
            throw MobileSDError("cannot read the tokenizer merges \(mergesURL.path)", fix: "re-export or re-copy the bundle")
        }
        var merges: [TokenPair] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if n == 0 && line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.isEmpty { continue }
            guard parts.count == 2 else {
                throw MobileSDError("\(mergesURL.lastPathComponent) line \(n + 1) is not a pair of symbols",
                                    fix: "re-export the bundle")
            }
            merges.append(TokenPair(String(parts[0]), String(parts[1])))
        }
        self.init(vocab: vocab, merges: merges, bosId: bosId, eosId: eosId, padId: padId, maxLength: maxLength,
                  lowercase: lowercase)
    }
}
