import Foundation

/// CLIP's byte-level BPE tokenizer, as the bundle's tokenizer (transformers' CLIPTokenizer on the host)
/// turns a prompt into 77 ids: special tokens matched in the raw text, then NFC, lowercase, CLIP's split
/// pattern, byte-to-unicode mapping, BPE merges with the `</w>` end-of-word suffix; BOS + ids + EOS,
/// truncated and padded to `maxLength`.
public final class BPETokenizer {
    public let bosId: Int
    public let eosId: Int
    public let padId: Int
    public let maxLength: Int
    public let lowercase: Bool
    private let vocab: [String: Int]
    private let ranks: [TokenPair: Int]
    private let specialTokens: [(text: String, id: Int)]
    private let byteEncoder: [String]
    private var cache: [String: [Int]] = [:]

    public init(vocab: [String: Int], merges: [TokenPair], bosId: Int, eosId: Int, padId: Int,
                maxLength: Int = 77, lowercase: Bool = true) {
        self.vocab = vocab
        var ranks: [TokenPair: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (rank, pair) in merges.enumerated() where ranks[pair] == nil { ranks[pair] = rank }
        self.ranks = ranks
        self.bosId = bosId
        self.eosId = eosId
        self.padId = padId
        self.maxLength = maxLength
        self.lowercase = lowercase
        self.specialTokens = ["<|startoftext|>", "<|endoftext|>"].compactMap { t in vocab[t].map { (t, $0) } }
        self.byteEncoder = ByteEncoder.table
    }

    /// The padded, truncated ids (`maxLength` of them) and the length before truncation (BOS and EOS included).
    public func tokenize(_ text: String) -> (ids: [Int32], untruncatedLength: Int) {
        let tokens = encode(text)
        var ids = [bosId] + tokens.prefix(maxLength - 2) + [eosId]
        ids += Array(repeating: padId, count: maxLength - ids.count)
        return (ids.map { Int32($0) }, tokens.count + 2)
    }

    /// Token ids of `text` without BOS/EOS, padding or truncation.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitOnSpecialTokens(text) {
            switch segment {
            case .special(let id): ids.append(id)
            case .text(let t):
                for piece in Self.pretokenize(normalize(t)) { ids += bpeIds(piece) }
            }
        }
        return ids
    }

    private enum Segment { case text(String), special(Int) }

    /// Special tokens are matched in the raw text, before normalization (they are not "normalized" tokens).
    private func splitOnSpecialTokens(_ text: String) -> [Segment] {
        var segments: [Segment] = []
        let scalars = Array(text.unicodeScalars)
        let specials = specialTokens.map { (Array($0.text.unicodeScalars), $0.id) }
        var start = 0, i = 0
        while i < scalars.count {
            if let (s, id) = specials.first(where: { sp in
                i + sp.0.count <= scalars.count && Array(scalars[i..<(i + sp.0.count)]) == sp.0
            }) {
                if start < i { segments.append(.text(String(String.UnicodeScalarView(scalars[start..<i])))) }
                segments.append(.special(id))
                i += s.count
                start = i
            } else {
                i += 1
            }
        }
        if start < scalars.count { segments.append(.text(String(String.UnicodeScalarView(scalars[start...])))) }
        return segments
    }

    /// NFC, then (CLIP lowercases) each scalar's full lowercase mapping, like the tokenizers library's
    /// Lowercase normalizer (per character, no context rules).
    private func normalize(_ text: String) -> [Unicode.Scalar] {
        let nfc = text.precomposedStringWithCanonicalMapping
        guard lowercase else { return Array(nfc.unicodeScalars) }
        var out: [Unicode.Scalar] = []
        for s in nfc.unicodeScalars { out += s.properties.lowercaseMapping.unicodeScalars }
        return out
    }

    /// CLIP's split pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
    /// matched leftmost-first at each position; what matches none (whitespace) is dropped. Written as a scanner
    /// over Unicode properties so the classes are exactly Unicode's (L = Lu Ll Lt Lm Lo, N = Nd Nl No,
    /// \s = White_Space), independent of a regex engine's definitions.
    static func pretokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        let literals = ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
            .map { Array($0.unicodeScalars) }
        var pieces: [[Unicode.Scalar]] = []
        var i = 0
        while i < s.count {
            if let lit = literals.first(where: { l in i + l.count <= s.count && Array(s[i..<(i + l.count)]) == l }) {
                pieces.append(lit)
                i += lit.count
            } else if isLetter(s[i]) {
                var j = i + 1
                while j < s.count && isLetter(s[j]) { j += 1 }
                pieces.append(Array(s[i..<j]))
                i = j
            } else if isNumber(s[i]) {
                pieces.append([s[i]])
                i += 1
            } else if !s[i].properties.isWhitespace {
                var j = i + 1
                while j < s.count && !s[j].properties.isWhitespace && !isLetter(s[j]) && !isNumber(s[j]) { j += 1 }
                pieces.append(Array(s[i..<j]))
                i = j
            } else {
                i += 1
            }
        }
        return pieces
    }

    private static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    private static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// Byte-level encoding of one piece, then BPE; ids from the vocabulary (unknown symbols: EOS, CLIP's unk).
    private func bpeIds(_ piece: [Unicode.Scalar]) -> [Int] {
        let encoded = String(String.UnicodeScalarView(piece)).utf8.map { byteEncoder[Int($0)] }.joined()
        if let hit = cache[encoded] { return hit }
        let ids = bpe(encoded.unicodeScalars.map { String($0) }).map { vocab[$0] ?? eosId }
        cache[encoded] = ids
        return ids
    }

    /// Merges the lowest-ranked adjacent pair, everywhere it occurs left to right, until no pair has a rank.
    private func bpe(_ characters: [String]) -> [String] {
        guard !characters.isEmpty else { return [] }
        var word = characters
        word[word.count - 1] += "</w>"
        while word.count > 1 {
            var best: (rank: Int, pair: TokenPair)?
            for i in 0..<(word.count - 1) {
                let pair = TokenPair(word[i], word[i + 1])
                if let r = ranks[pair], r < (best?.rank ?? Int.max) { best = (r, pair) }
            }
            guard let (_, pair) = best else { break }
            var merged: [String] = []
            merged.reserveCapacity(word.count)
            var i = 0
            while i < word.count {
                if i < word.count - 1 && word[i] == pair.first && word[i + 1] == pair.second {
                    merged.append(pair.first + pair.second)
                    i += 2
                } else {
                    merged.append(word[i])
                    i += 1
                }
            }
            word = merged
        }
        return word
    }
}

/// One merge rule of merges.txt.
public struct TokenPair: Hashable, Sendable {
    public let first: String
    public let second: String

    public init(_ first: String, _ second: String) {
        self.first = first
        self.second = second
    }
}

/// GPT-2 / CLIP's reversible map from bytes to printable characters (`bytes_to_unicode`).
enum ByteEncoder {
    static let table: [String] = {
        var bytes = Array(33...126) + Array(161...172) + Array(174...255)
        var chars = bytes
        var extra = 0
        for b in 0..<256 where !bytes.contains(b) {
            bytes.append(b)
            chars.append(256 + extra)
            extra += 1
        }
        var table = [String](repeating: "", count: 256)
        for (b, c) in zip(bytes, chars) { table[b] = String(Unicode.Scalar(UInt32(c))!) }
        return table
    }()
}
