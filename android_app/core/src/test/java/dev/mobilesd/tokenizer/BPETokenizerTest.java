package dev.mobilesd.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.mobilesd.testing.Golden;
import java.util.ArrayList;
import java.util.List;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/** CLIP BPE ids for every golden prompt (empty, over 77 tokens, punctuation, digits, unicode, case, spaces). */
class BPETokenizerTest {
    @TestFactory
    List<DynamicTest> everyGoldenPrompt() {
        JSONObject t = Golden.section("tokenizer");
        BPETokenizer tok = BPETokenizer.fromFiles(Golden.file(t.optString("vocab")), Golden.file(t.optString("merges")),
                t.optInt("bos_id"), t.optInt("eos_id"), t.optInt("pad_id"), t.optInt("max_length"), true);
        JSONArray cases = t.optJSONArray("cases");
        List<DynamicTest> tests = new ArrayList<>();
        for (int i = 0; i < cases.length(); i++) {
            JSONObject c = cases.optJSONObject(i);
            String prompt = c.optString("prompt");
            String label = "[" + i + "] " + (prompt.length() > 40 ? prompt.substring(0, 40) + "..." : prompt)
                    .replaceAll("\\p{Cntrl}", "?");
            tests.add(DynamicTest.dynamicTest(label, () -> {
                JSONArray ids = c.optJSONArray("ids");
                int[] want = new int[ids.length()];
                for (int k = 0; k < want.length; k++) {
                    want[k] = ids.optInt(k);
                }
                assertArrayEquals(want, tok.encode(prompt), "ids of " + prompt);
                assertEquals(c.optInt("untruncated_length"), tok.tokenIds(prompt).size() + 2,
                        "untruncated length of " + prompt);
            }));
        }
        return tests;
    }
}
