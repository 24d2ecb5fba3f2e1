// BPETokenizer: the CLIP byte-level BPE tokenizer, as transformers' CLIPTokenizer (tokenizers backend) runs it.
//
// Written by hand because no npm package reproduces that exact pipeline offline from vocab.json + merges.txt:
//   1. the special tokens <|startoftext|> / <|endoftext|> are split out of the raw text first (not normalized);
//   2. normalizer: NFC, every run of Unicode White_Space -> " ", lowercase (per code point, no final-sigma rule);
//   3. pre-tokenizer: CLIP's split regex (keep the matches), then byte-level: GPT-2's regex again on each
//      piece, each UTF-8 byte mapped to a printable character;
//   4. BPE with merge ranks from merges.txt, "</w>" on the last symbol of a word;
//   5. ids = [BOS] + tokens[:max_length - 2] + [EOS], padded with pad_id to max_length.
// Rust's regex \s is Unicode White_Space; JS's \s is not the same set (U+0085, U+FEFF), so the patterns
// spell \p{White_Space}.

const WS = '\\p{White_Space}';
const CLIP_SPLIT = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${WS}\\p{L}\\p{N}]+`, 'gu');
const BYTE_LEVEL_SPLIT = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`, 'gu');
const WHITESPACE_RUN = new RegExp(`[${WS}]+`, 'gu');
const END_OF_WORD = '</w>';

/** GPT-2 / CLIP's reversible byte -> printable character map. */
function bytesToUnicode() {
  const bs = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) bs.push(b);
  for (let b = 0xA1; b <= 0xAC; b++) bs.push(b);
  for (let b = 0xAE; b <= 0xFF; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
}

export class BPETokenizer {
  /**
   * @param {Object<string, number>} vocab token -> id (vocab.json)
   * @param {string} mergesText merges.txt (a "#version" header line, then "a b" pairs by rank)
   * @param {{bosId: number, eosId: number, padId: number, maxLength: number,
   *          bosToken?: string, eosToken?: string}} special
   */
  constructor(vocab, mergesText, special) {
    this.vocab = vocab;
    this.bosId = special.bosId;
    this.eosId = special.eosId;
    this.padId = special.padId;
    this.maxLength = special.maxLength;
    this.specialTokens = new Map([
      [special.bosToken ?? '<|startoftext|>', special.bosId],
      [special.eosToken ?? '<|endoftext|>', special.eosId],
    ]);
    this.ranks = new Map();
    const lines = mergesText.split('\n');
    let rank = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].replace(/\r$/, '');
      if ((i === 0 && line.startsWith('#version')) || line === '') continue;
      this.ranks.set(line, rank++);
    }
    this.byteMap = bytesToUnicode();
    this.encoder = new TextEncoder();
    this.cache = new Map();
  }

  /** From a bundle's manifest `tokenizer` entry and its two files' contents. */
  static fromBundle(tokenizerEntry, vocabText, mergesText) {
    return new BPETokenizer(JSON.parse(vocabText), mergesText, {
      bosId: tokenizerEntry.bos_id, eosId: tokenizerEntry.eos_id, padId: tokenizerEntry.pad_id,
      maxLength: tokenizerEntry.max_length,
    });
  }

  normalize(text) {
    const nfc = text.normalize('NFC').replace(WHITESPACE_RUN, ' ');
    let out = '';
    for (const ch of nfc) out += ch.toLowerCase();   // per code point, as the Rust normalizer does
    return out;
  }

  bpe(word) {
    const cached = this.cache.get(word);
    if (cached) return cached;
    const symbols = Array.from(word);
    if (symbols.length === 0) return [];
    symbols[symbols.length - 1] += END_OF_WORD;
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < symbols.length - 1; i++) {
        const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const a = symbols[best];
      const b = symbols[best + 1];
      // merge every occurrence of the pair, left to right, as the BPE model does for one rank
      const merged = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i < symbols.length - 1 && symbols[i] === a && symbols[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else {
          merged.push(symbols[i]);
        }
      }
      symbols.splice(0, symbols.length, ...merged);
    }
    if (this.cache.size > 10000) this.cache.clear();
    this.cache.set(word, symbols);
    return symbols;
  }

  /** Token ids of text without BOS/EOS and without truncation. */
  encodeTokens(text) {
    const ids = [];
    // special tokens are matched in the raw text, before normalization
    let rest = text;
    while (rest.length) {
      let at = -1;
      let token = null;
      for (const t of this.specialTokens.keys()) {
        const k = rest.indexOf(t);
        if (k >= 0 && (at < 0 || k < at)) {
          at = k;
          token = t;
        }
      }
      const chunk = at < 0 ? rest : rest.slice(0, at);
      this.encodeOrdinary(chunk, ids);
      if (at < 0) break;
      ids.push(this.specialTokens.get(token));
      rest = rest.slice(at + token.length);
    }
    return ids;
  }

  encodeOrdinary(text, ids) {
    const normalized = this.normalize(text);
    for (const piece of normalized.match(CLIP_SPLIT) ?? []) {
      for (const sub of piece.match(BYTE_LEVEL_SPLIT) ?? []) {
        let mapped = '';
        for (const byte of this.encoder.encode(sub)) mapped += this.byteMap[byte];
        for (const symbol of this.bpe(mapped)) {
          const id = this.vocab[symbol];
          ids.push(id === undefined ? this.eosId : id);   // unk_token is <|endoftext|>
        }
      }
    }
  }

  /** The ids the pipeline feeds the text encoder: [BOS, tokens..., EOS] padded to maxLength. */
  encode(text) {
    const tokens = this.encodeTokens(text).slice(0, this.maxLength - 2);
    const ids = new Int32Array(this.maxLength).fill(this.padId);
    ids[0] = this.bosId;
    ids.set(tokens, 1);
    ids[tokens.length + 1] = this.eosId;
    return ids;
  }
}
