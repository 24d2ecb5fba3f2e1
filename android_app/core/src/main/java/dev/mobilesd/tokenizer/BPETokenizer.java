package dev.mobilesd.tokenizer;

import dev.mobilesd.MobileSdException;
import dev.mobilesd.json.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.json.JSONObject;

/**
 * The CLIP byte-level BPE tokenizer, as {@code transformers.CLIPTokenizer} (tokenizers backend) runs it for
 * SD 1.x / 2.x: special tokens are cut out of the raw text first; every other piece is NFC-normalised, each
 * whitespace run becomes one space, every code point is lowercased on its own; the CLIP pattern splits words,
 * single digits and punctuation runs (whitespace dropped); each piece's UTF-8 bytes are mapped to GPT-2's
 * printable characters and merged by rank, the last symbol carrying {@code </w>}. Ids: BOS, up to
 * {@code maxLength - 2} tokens, EOS, then padding.
 *
 * <p>Written out by hand because no Java library ships CLIP's tokenizer; the golden vectors (docs/golden-vectors.md)
 * hold the Python tokenizer's ids for 34 hard prompts and the tests compare them exactly.
 */
public final class BPETokenizer {
    private static final String END_OF_WORD = "</w>";
    /** Unicode White_Space, spelled out: Android's regex engine has no UNICODE_CHARACTER_CLASS flag. */
    private static final String WHITESPACE = "\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";
    private static final Pattern WHITESPACE_RUN = Pattern.compile("[" + WHITESPACE + "]+");
    private static final Pattern PIECES = Pattern.compile(
            "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^" + WHITESPACE + "\\p{L}\\p{N}]+");
    private static final String[] BYTE_TO_UNICODE = byteToUnicode();

    private final Map<String, Integer> vocab;
    private final Map<String, Integer> mergeRanks;
    private final String[] specialTokens;
    private final int[] specialIds;
    public final int bosId;
    public final int eosId;
    public final int padId;
    public final int maxLength;
    private final boolean lowercase;

    public BPETokenizer(Map<String, Integer> vocab, List<String> merges, int bosId, int eosId, int padId,
                        int maxLength, boolean lowercase) {
        this.vocab = vocab;
        this.mergeRanks = new HashMap<>(merges.size() * 2);
        for (int i = 0; i < merges.size(); i++) {
            mergeRanks.put(merges.get(i), i);
        }
        this.bosId = bosId;
        this.eosId = eosId;
        this.padId = padId;
        this.maxLength = maxLength;
        this.lowercase = lowercase;
        // the special tokens are the vocabulary entries of the BOS / EOS ids (<|startoftext|>, <|endoftext|>)
        List<String> tokens = new ArrayList<>();
        List<Integer> ids = new ArrayList<>();
        for (Map.Entry<String, Integer> e : vocab.entrySet()) {
            int id = e.getValue();
            if ((id == bosId || id == eosId || id == padId) && !tokens.contains(e.getKey())) {
                tokens.add(e.getKey());
                ids.add(id);
            }
        }
        this.specialTokens = tokens.toArray(new String[0]);
        this.specialIds = ids.stream().mapToInt(Integer::intValue).toArray();
        if (maxLength < 2) {
            throw new MobileSdException("tokenizer max_length " + maxLength + " leaves no room for BOS and EOS",
                    "re-export the bundle");
        }
    }

    /** Reads {@code vocab.json} (token -> id) and {@code merges.txt} (one "a b" pair per line after a #version line). */
    public static BPETokenizer fromFiles(Path vocabJson, Path mergesTxt, int bosId, int eosId, int padId, int maxLength,
                                         boolean lowercase) {
        JSONObject v = Json.readObject(vocabJson, "tokenizer vocabulary");
        Map<String, Integer> vocab = new HashMap<>(v.length() * 2);
        Iterator<String> keys = v.keys();
        while (keys.hasNext()) {
            String k = keys.next();
            vocab.put(k, v.optInt(k));
        }
        List<String> merges = new ArrayList<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(mergesTxt, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new MobileSdException("cannot read " + mergesTxt + ": " + e.getMessage(), "copy the bundle again");
        }
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            if (i == 0 && line.startsWith("#version")) {
                continue;
            }
            if (line.isEmpty()) {
                continue;
            }
            String[] parts = line.split(" ");
            if (parts.length != 2) {
                throw new MobileSdException(mergesTxt + " line " + (i + 1) + " is not a pair of symbols", "copy the bundle again");
            }
            merges.add(parts[0] + " " + parts[1]);
        }
        for (int id : new int[] {bosId, eosId, padId}) {
            if (!vocab.containsValue(id)) {
                throw new MobileSdException("special token id " + id + " is not in " + vocabJson, "re-export the bundle");
            }
        }
        return new BPETokenizer(vocab, merges, bosId, eosId, padId, maxLength, lowercase);
    }

    /** The {@code maxLength} ids the text encoder takes: BOS, tokens (truncated), EOS, padding. */
    public int[] encode(String text) {
        List<Integer> tokens = tokenIds(text);
        int[] ids = new int[maxLength];
        java.util.Arrays.fill(ids, padId);
        ids[0] = bosId;
        int n = Math.min(tokens.size(), maxLength - 2);
        for (int i = 0; i < n; i++) {
            ids[1 + i] = tokens.get(i);
        }
        ids[1 + n] = eosId;
        return ids;
    }

    /** Token ids of {@code text} without BOS/EOS, untruncated. */
    public List<Integer> tokenIds(String text) {
        List<Integer> out = new ArrayList<>();
        int pos = 0;
        while (pos <= text.length()) {
            // the next special token in the raw text (matched before normalisation, as the tokenizers library does)
            int best = -1;
            int bestAt = text.length();
            for (int s = 0; s < specialTokens.length; s++) {
                int at = text.indexOf(specialTokens[s], pos);
                if (at >= 0 && (at < bestAt || (at == bestAt && best >= 0 && specialTokens[s].length() > specialTokens[best].length()))) {
                    best = s;
                    bestAt = at;
                }
            }
            encodeOrdinary(text.substring(pos, bestAt), out);
            if (best < 0) {
                break;
            }
            out.add(specialIds[best]);
            pos = bestAt + specialTokens[best].length();
        }
        return out;
    }

    private void encodeOrdinary(String segment, List<Integer> out) {
        if (segment.isEmpty()) {
            return;
        }
        String s = Normalizer.normalize(segment, Normalizer.Form.NFC);
        s = WHITESPACE_RUN.matcher(s).replaceAll(" ");
        if (lowercase) {
            s = lowercaseEachCodePoint(s);
        }
        Matcher m = PIECES.matcher(s);
        while (m.find()) {
            for (String token : bpe(byteLevel(m.group()))) {
                Integer id = vocab.get(token);
                out.add(id != null ? id : eosId);   // unknown -> the unk token (<|endoftext|>), as CLIPTokenizer
            }
        }
    }

    /** Lowercases each code point on its own (the tokenizers library's Lowercase: no final-sigma context). */
    static String lowercaseEachCodePoint(String s) {
        StringBuilder sb = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            sb.append(new String(Character.toChars(cp)).toLowerCase(Locale.ROOT));
            i += Character.charCount(cp);
        }
        return sb.toString();
    }

    private static String byteLevel(String piece) {
        StringBuilder sb = new StringBuilder();
        for (byte b : piece.getBytes(StandardCharsets.UTF_8)) {
            sb.append(BYTE_TO_UNICODE[b & 0xFF]);
        }
        return sb.toString();
    }

    private List<String> bpe(String word) {
        List<String> symbols = new ArrayList<>();
        for (int i = 0; i < word.length(); i++) {
            symbols.add(String.valueOf(word.charAt(i)));
        }
        int last = symbols.size() - 1;
        symbols.set(last, symbols.get(last) + END_OF_WORD);
        while (symbols.size() > 1) {
            int bestRank = Integer.MAX_VALUE;
            String bestPair = null;
            for (int i = 0; i + 1 < symbols.size(); i++) {
                Integer r = mergeRanks.get(symbols.get(i) + " " + symbols.get(i + 1));
                if (r != null && r < bestRank) {
                    bestRank = r;
                    bestPair = symbols.get(i) + " " + symbols.get(i + 1);
                }
            }
            if (bestPair == null) {
                break;
            }
            int space = bestPair.indexOf(' ');
            String first = bestPair.substring(0, space);
            String second = bestPair.substring(space + 1);
            List<String> merged = new ArrayList<>(symbols.size());
            for (int i = 0; i < symbols.size(); ) {
                if (i + 1 < symbols.size() && symbols.get(i).equals(first) && symbols.get(i + 1).equals(second)) {
                    merged.add(first + second);
                    i += 2;
                } else {
                    merged.add(symbols.get(i));
                    i += 1;
                }
            }
            symbols = merged;
        }
        return symbols;
    }

    /** GPT-2's reversible byte -> printable character table (mobilesd/tokenizer.py {@code _bytes_to_unicode}). */
    private static String[] byteToUnicode() {
        String[] table = new String[256];
        boolean[] printable = new boolean[256];
        for (int b = '!'; b <= '~'; b++) {
            printable[b] = true;
        }
        for (int b = 0xA1; b <= 0xAC; b++) {
            printable[b] = true;
        }
        for (int b = 0xAE; b <= 0xFF; b++) {
            printable[b] = true;
        }
        int n = 0;
        for (int b = 0; b < 256; b++) {
            table[b] = printable[b] ? String.valueOf((char) b) : String.valueOf((char) (256 + n++));
        }
        return table;
    }
}
