package dev.mobilesd.litert;

import com.sun.jna.IntegerType;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.Structure;
import com.sun.jna.ptr.PointerByReference;

/**
 * The part of LiteRT's C API ({@code litert/c/litert_*.h}, exported by {@code libLiteRt.so}) that running a
 * compiled model needs, bound with JNA. The same library ships in the ai-edge-litert wheel (desktop) and in the
 * {@code com.google.ai.edge.litert:litert} AAR (Android, whose version script exports {@code LiteRt*}), so one
 * binding serves both. Handles are opaque pointers; every function returns a {@code LiteRtStatus} (0 = ok).
 */
public interface LiteRtLibrary extends Library {
    /** {@code size_t} / {@code LiteRtParamIndex}: 64-bit on arm64 and x86-64, 32-bit on 32-bit ABIs. */
    final class SizeT extends IntegerType {
        private static final long serialVersionUID = 1L;

        public SizeT() {
            this(0);
        }

        public SizeT(long value) {
            super(Native.SIZE_T_SIZE, value, true);
        }
    }

    /** {@code LiteRtAny}: a type tag and an 8-byte union (string values are pointers). */
    @Structure.FieldOrder({"type", "value"})
    class LiteRtAny extends Structure {
        public int type;
        public long value;
    }

    /** {@code LiteRtEnvOption}: {@code {LiteRtEnvOptionTag tag; LiteRtAny value;}} (24 bytes on 64-bit ABIs). */
    @Structure.FieldOrder({"tag", "value"})
    class LiteRtEnvOption extends Structure {
        public int tag;
        public LiteRtAny value;
    }

    int ENV_OPTION_RUNTIME_LIBRARY_DIR = 22;   // kLiteRtEnvOptionTagRuntimeLibraryDir
    int ANY_TYPE_STRING = 8;                   // kLiteRtAnyTypeString
    int HW_ACCELERATOR_CPU = 1;
    int HW_ACCELERATOR_GPU = 2;
    int LOCK_READ = 0;
    int LOCK_WRITE = 1;
    int ELEMENT_FLOAT32 = 1;
    int ELEMENT_INT32 = 2;
    /** sizeof(LiteRtRankedTensorType): element type, a 4-byte rank/has_strides unit, int32 dims[8], uint32 strides[8]. */
    int RANKED_TENSOR_TYPE_BYTES = 72;

    int LiteRtCreateEnvironment(int numOptions, LiteRtEnvOption options, PointerByReference environment);

    void LiteRtDestroyEnvironment(Pointer environment);

    int LiteRtCreateModelFromFile(Pointer environment, String filename, PointerByReference model);

    void LiteRtDestroyModel(Pointer model);

    int LiteRtGetNumModelSignatures(Pointer model, Pointer numSignatures);

    int LiteRtGetModelSignature(Pointer model, SizeT index, PointerByReference signature);

    int LiteRtGetSignatureKey(Pointer signature, PointerByReference key);

    int LiteRtGetNumSignatureInputs(Pointer signature, Pointer numInputs);

    int LiteRtGetSignatureInputName(Pointer signature, SizeT index, PointerByReference name);

    int LiteRtGetSignatureInputTensorByIndex(Pointer signature, SizeT index, PointerByReference tensor);

    int LiteRtGetNumSignatureOutputs(Pointer signature, Pointer numOutputs);

    int LiteRtGetSignatureOutputName(Pointer signature, SizeT index, PointerByReference name);

    int LiteRtGetSignatureOutputTensorByIndex(Pointer signature, SizeT index, PointerByReference tensor);

    int LiteRtGetRankedTensorType(Pointer tensor, Pointer rankedTensorType);

    int LiteRtCreateOptions(PointerByReference options);

    void LiteRtDestroyOptions(Pointer options);

    int LiteRtSetOptionsHardwareAccelerators(Pointer options, int accelerators);

    int LiteRtCreateCompiledModel(Pointer environment, Pointer model, Pointer options, PointerByReference compiledModel);

    void LiteRtDestroyCompiledModel(Pointer compiledModel);

    int LiteRtCompiledModelIsFullyAccelerated(Pointer compiledModel, Pointer fullyAccelerated);

    int LiteRtGetCompiledModelInputBufferRequirements(Pointer compiledModel, SizeT signatureIndex, SizeT inputIndex,
                                                      PointerByReference requirements);

    int LiteRtGetCompiledModelOutputBufferRequirements(Pointer compiledModel, SizeT signatureIndex, SizeT outputIndex,
                                                       PointerByReference requirements);

    int LiteRtGetTensorBufferRequirementsBufferSize(Pointer requirements, Pointer bufferSize);

    int LiteRtCreateManagedTensorBufferFromRequirements(Pointer environment, Pointer rankedTensorType,
                                                        Pointer requirements, PointerByReference buffer);

    void LiteRtDestroyTensorBuffer(Pointer buffer);

    int LiteRtGetTensorBufferType(Pointer buffer, Pointer bufferType);

    int LiteRtLockTensorBuffer(Pointer buffer, PointerByReference hostAddress, int lockMode);

    int LiteRtUnlockTensorBuffer(Pointer buffer);

    int LiteRtRunCompiledModel(Pointer compiledModel, SizeT signatureIndex, SizeT numInputs, Pointer inputBuffers,
                               SizeT numOutputs, Pointer outputBuffers);
}
