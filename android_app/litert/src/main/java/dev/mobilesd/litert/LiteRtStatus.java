package dev.mobilesd.litert;

import java.util.HashMap;
import java.util.Map;

/**
 * {@code LiteRtStatus} codes ({@code litert/c/litert_common.h}) by name: the 2.3 library has no
 * {@code LiteRtGetStatusString}, and "status 504" alone helps nobody.
 */
final class LiteRtStatus {
    private static final Map<Integer, String> NAMES = new HashMap<>();

    static {
        String[] pairs = {"0", "Ok", "1", "ErrorInvalidArgument", "2", "ErrorMemoryAllocationFailure", "3",
            "ErrorRuntimeFailure", "4", "ErrorMissingInputTensor", "5", "ErrorUnsupported", "6", "ErrorNotFound",
            "7", "ErrorTimeoutExpired", "8", "ErrorWrongVersion", "9", "ErrorUnknown", "10", "ErrorAlreadyExists",
            "100", "Cancelled", "500", "ErrorFileIO", "501", "ErrorInvalidFlatbuffer", "502", "ErrorDynamicLoading",
            "503", "ErrorSerialization", "504", "ErrorCompilation", "1000", "ErrorIndexOOB", "1001",
            "ErrorInvalidIrType", "1002", "ErrorInvalidGraphInvariant", "1003", "ErrorGraphModification"};
        for (int i = 0; i < pairs.length; i += 2) {
            NAMES.put(Integer.parseInt(pairs[i]), pairs[i + 1]);
        }
    }

    private LiteRtStatus() {
    }

    static String describe(int status) {
        String n = NAMES.get(status);
        return "status " + status + (n != null ? " (kLiteRtStatus" + n + ")" : "");
    }
}
