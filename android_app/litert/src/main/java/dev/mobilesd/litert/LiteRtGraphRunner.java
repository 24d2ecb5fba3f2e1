package dev.mobilesd.litert;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.bundle.TensorSpec;
import dev.mobilesd.litert.LiteRtLibrary.SizeT;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One graph compiled by LiteRT ({@code LiteRtCreateCompiledModel}) for the chosen accelerators, with its input
 * and output tensor buffers made once from the compiled model's requirements. A run locks each input buffer,
 * copies the tensor in, runs, and copies each output out.
 *
 * <p>For UNet chunk chaining ({@link #runChained}) an output can stay in its buffer and be bound directly as a
 * later chunk's input: no copy through Java, and on the GPU no round trip through host memory.
 *
 * <p>Inputs are matched to the signature by name. The file's outputs are named {@code output_0, output_1, ...}
 * (litert-torch), not as the manifest names them: they are mapped by position, ordered by that index.
 */
final class LiteRtGraphRunner implements GraphRunner {
    private static final SizeT SIGNATURE = new SizeT(0);
    private final LiteRtLibrary lib;
    private final GraphSpec spec;
    private Pointer model;
    private Pointer compiled;
    private final List<Pointer> buffers = new ArrayList<>();
    private final TensorSpec[] inputSpecs;      // by signature input index
    private final TensorSpec[] outputSpecs;     // by signature output index
    private final Pointer[] inputBuffers;
    private final Pointer[] outputBuffers;
    private final Memory inputArray;
    private final Memory outputArray;
    private final Pointer environment;
    private long runs;
    final boolean fullyAccelerated;

    LiteRtGraphRunner(LiteRtLibrary lib, Pointer environment, GraphSpec spec, Path file, int accelerators,
                      boolean requireFullyAccelerated) {
        this.lib = lib;
        this.spec = spec;
        this.environment = environment;
        boolean ok = false;
        try {
            PointerByReference ref = new PointerByReference();
            check(lib.LiteRtCreateModelFromFile(environment, file.toString(), ref), "load " + file.getFileName());
            model = ref.getValue();
            Memory count = new Memory(Native.SIZE_T_SIZE);
            check(lib.LiteRtGetNumModelSignatures(model, count), "count signatures");
            if (readSize(count) < 1) {
                throw new MobileSdException("graph " + spec.name + " (" + file.getFileName() + ") has no signature",
                        "re-export the bundle");
            }
            check(lib.LiteRtGetModelSignature(model, SIGNATURE, ref), "read signature");
            Pointer signature = ref.getValue();

            check(lib.LiteRtGetNumSignatureInputs(signature, count), "count inputs");
            int nIn = (int) readSize(count);
            inputSpecs = new TensorSpec[nIn];
            List<String> names = new ArrayList<>();
            for (int i = 0; i < nIn; i++) {
                check(lib.LiteRtGetSignatureInputName(signature, new SizeT(i), ref), "read input name");
                String name = ref.getValue().getString(0);
                names.add(name);
                TensorSpec s = spec.input(name);
                if (s == null) {
                    throw mismatch("its input '" + name + "' is not in the manifest (" + spec.inputs + ")");
                }
                check(lib.LiteRtGetSignatureInputTensorByIndex(signature, new SizeT(i), ref), "read input tensor");
                checkType(ref.getValue(), s);
                inputSpecs[i] = s;
            }
            for (TensorSpec s : spec.inputs) {
                if (!names.contains(s.name)) {
                    throw mismatch("it has no input '" + s.name + "' (its inputs: " + names + ")");
                }
            }

            check(lib.LiteRtGetNumSignatureOutputs(signature, count), "count outputs");
            int nOut = (int) readSize(count);
            if (nOut != spec.outputs.size()) {
                throw mismatch("it has " + nOut + " outputs, the manifest lists " + spec.outputs.size());
            }
            String[] outNames = new String[nOut];
            Integer[] order = new Integer[nOut];
            for (int i = 0; i < nOut; i++) {
                check(lib.LiteRtGetSignatureOutputName(signature, new SizeT(i), ref), "read output name");
                outNames[i] = ref.getValue().getString(0);
                order[i] = i;
            }
            // position k of the outputs ordered by their numeric suffix is manifest output k
            Arrays.sort(order, (a, b) -> Long.compare(outputIndex(outNames[a]), outputIndex(outNames[b])));
            outputSpecs = new TensorSpec[nOut];
            for (int k = 0; k < nOut; k++) {
                int sigIndex = order[k];
                outputSpecs[sigIndex] = spec.outputs.get(k);
                check(lib.LiteRtGetSignatureOutputTensorByIndex(signature, new SizeT(sigIndex), ref), "read output tensor");
                checkType(ref.getValue(), outputSpecs[sigIndex]);
            }

            check(lib.LiteRtCreateOptions(ref), "create options");
            Pointer options = ref.getValue();
            try {
                check(lib.LiteRtSetOptionsHardwareAccelerators(options, accelerators), "set accelerators");
                int status = lib.LiteRtCreateCompiledModel(environment, model, options, ref);
                if (status != 0) {
                    throw new MobileSdException("graph " + spec.name + " does not compile for the "
                            + acceleratorName(accelerators) + " (" + LiteRtStatus.describe(status) + "; the runtime log "
                            + "names the ops)", (accelerators & LiteRtLibrary.HW_ACCELERATOR_GPU) != 0
                            ? "run with --accelerator cpu, or export the bundle again (its GPU check must pass)"
                            : "re-export the bundle");
                }
                compiled = ref.getValue();
            } finally {
                lib.LiteRtDestroyOptions(options);
            }
            Memory flag = new Memory(1);
            flag.setByte(0, (byte) 0);
            check(lib.LiteRtCompiledModelIsFullyAccelerated(compiled, flag), "query acceleration");
            fullyAccelerated = flag.getByte(0) != 0;
            if (requireFullyAccelerated && !fullyAccelerated) {
                throw new MobileSdException("graph " + spec.name + " is not fully accelerated on the "
                        + acceleratorName(accelerators) + ": some ops would run on the CPU",
                        "pass --allow-cpu-fallback to accept that, or run with --accelerator cpu");
            }

            Pointer tensorTypeRef;
            inputBuffers = new Pointer[nIn];
            for (int i = 0; i < nIn; i++) {
                check(lib.LiteRtGetSignatureInputTensorByIndex(signature, new SizeT(i), ref), "read input tensor");
                tensorTypeRef = rankedType(ref.getValue());
                check(lib.LiteRtGetCompiledModelInputBufferRequirements(compiled, SIGNATURE, new SizeT(i), ref),
                        "input buffer requirements");
                inputBuffers[i] = newBuffer(environment, tensorTypeRef, ref.getValue());
            }
            outputBuffers = new Pointer[nOut];
            for (int i = 0; i < nOut; i++) {
                check(lib.LiteRtGetSignatureOutputTensorByIndex(signature, new SizeT(i), ref), "read output tensor");
                tensorTypeRef = rankedType(ref.getValue());
                check(lib.LiteRtGetCompiledModelOutputBufferRequirements(compiled, SIGNATURE, new SizeT(i), ref),
                        "output buffer requirements");
                outputBuffers[i] = newBuffer(environment, tensorTypeRef, ref.getValue());
            }
            inputArray = pointerArray(inputBuffers);
            outputArray = pointerArray(outputBuffers);
            ok = true;
        } finally {
            if (!ok) {
                close();
            }
        }
    }

    private static long outputIndex(String name) {
        String digits = name.replaceAll("\\D", "");
        return digits.isEmpty() ? 0 : Long.parseLong(digits);
    }

    private static String acceleratorName(int accelerators) {
        return (accelerators & LiteRtLibrary.HW_ACCELERATOR_GPU) != 0
                ? ((accelerators & LiteRtLibrary.HW_ACCELERATOR_CPU) != 0 ? "GPU accelerator (CPU fallback allowed)"
                : "GPU accelerator") : "CPU";
    }

    private MobileSdException mismatch(String what) {
        return new MobileSdException("graph " + spec.name + " does not match its manifest entry: " + what,
                "re-export the bundle; the manifest and the graph file must come from the same export");
    }

    private void check(int status, String what) {
        if (status != 0) {
            throw new MobileSdException("LiteRT could not " + what + " for graph " + spec.name + " ("
                    + LiteRtStatus.describe(status) + ")", "check that the graph file is a valid TFLite model "
                    + "(re-export the bundle) and that the LiteRT library matches (ai-edge-litert 2.x)");
        }
    }

    private static long readSize(Memory m) {
        return Native.SIZE_T_SIZE == 8 ? m.getLong(0) : m.getInt(0) & 0xFFFFFFFFL;
    }

    private Memory rankedType(Pointer tensor) {
        Memory t = new Memory(LiteRtLibrary.RANKED_TENSOR_TYPE_BYTES);
        t.clear();
        check(lib.LiteRtGetRankedTensorType(tensor, t), "read a tensor type");
        return t;
    }

    private void checkType(Pointer tensor, TensorSpec s) {
        Memory t = rankedType(tensor);
        int element = t.getInt(0);
        int rank = t.getByte(4) & 0x7F;
        int[] dims = new int[rank];
        for (int d = 0; d < rank; d++) {
            dims[d] = t.getInt(8 + 4L * d);
        }
        int want = s.dtype == Tensor.DType.FLOAT32 ? LiteRtLibrary.ELEMENT_FLOAT32 : LiteRtLibrary.ELEMENT_INT32;
        if (element != want || !Arrays.equals(dims, s.shape())) {
            throw mismatch("tensor '" + s.name + "' is element type " + element + " " + Arrays.toString(dims)
                    + " in the file, " + s.dtype.manifestName + " " + Arrays.toString(s.shape()) + " in the manifest");
        }
    }

    private Pointer newBuffer(Pointer environment, Pointer tensorType, Pointer requirements) {
        PointerByReference ref = new PointerByReference();
        check(lib.LiteRtCreateManagedTensorBufferFromRequirements(environment, tensorType, requirements, ref),
                "create a tensor buffer");
        buffers.add(ref.getValue());
        return ref.getValue();
    }

    private static Memory pointerArray(Pointer[] ps) {
        Memory m = new Memory((long) Native.POINTER_SIZE * Math.max(1, ps.length));
        for (int i = 0; i < ps.length; i++) {
            m.setPointer((long) Native.POINTER_SIZE * i, ps[i]);
        }
        return m;
    }

    /** A tensor left in one of this runner's output buffers by {@link #runChained} (valid until it runs again). */
    static final class OutputBuffer {
        final LiteRtGraphRunner owner;
        final int index;
        final long run;

        OutputBuffer(LiteRtGraphRunner owner, int index, long run) {
            this.owner = owner;
            this.index = index;
            this.run = run;
        }

        @Override
        public String toString() {
            return "LiteRT buffer of " + owner.spec.name + " output " + owner.outputSpecs[index];
        }
    }

    @Override
    public Map<String, Tensor> run(Map<String, Tensor> inputs) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : runChained(new LinkedHashMap<>(inputs), false).entrySet()) {
            out.put(e.getKey(), (Tensor) e.getValue());
        }
        return out;
    }

    @Override
    public synchronized Map<String, Object> runChained(Map<String, Object> inputs, boolean keepOutputs) {
        if (compiled == null) {
            throw new IllegalStateException("graph " + spec.name + " is closed");
        }
        PointerByReference host = new PointerByReference();
        for (int i = 0; i < inputSpecs.length; i++) {
            TensorSpec s = inputSpecs[i];
            Object v = inputs.get(s.name);
            Pointer bound = inputBuffers[i];
            if (v instanceof OutputBuffer) {
                // an earlier chunk's output, still in its buffer: bound as this input, no copy
                OutputBuffer ob = (OutputBuffer) v;
                TensorSpec made = ob.owner.outputSpecs[ob.index];
                if (ob.owner == this || ob.owner.environment != environment || ob.owner.compiled == null
                        || ob.owner.runs != ob.run) {
                    throw new IllegalStateException("graph " + spec.name + ": " + ob + " is no longer valid");
                }
                if (made.dtype != s.dtype || !java.util.Arrays.equals(made.shape(), s.shape())) {
                    throw new IllegalArgumentException("graph " + spec.name + ": input '" + s.name + "' takes " + s
                            + ", got " + ob);
                }
                bound = ob.owner.outputBuffers[ob.index];
            } else if (v instanceof Tensor) {
                Tensor t = (Tensor) v;
                if (t.dtype() != s.dtype || !t.hasShape(s.shape())) {
                    throw new IllegalArgumentException("graph " + spec.name + ": input '" + s.name + "' is " + t
                            + ", the graph takes " + s);
                }
                check(lib.LiteRtLockTensorBuffer(inputBuffers[i], host, LiteRtLibrary.LOCK_WRITE), "lock an input buffer");
                try {
                    TensorBufferCopy.write(host.getValue(), t);
                } finally {
                    lib.LiteRtUnlockTensorBuffer(inputBuffers[i]);
                }
            } else {
                throw new IllegalArgumentException("graph " + spec.name + ": no tensor for input '" + s.name + "'");
            }
            inputArray.setPointer((long) Native.POINTER_SIZE * i, bound);
        }
        int status = lib.LiteRtRunCompiledModel(compiled, SIGNATURE, new SizeT(inputBuffers.length), inputArray,
                new SizeT(outputBuffers.length), outputArray);
        runs++;
        if (status != 0) {
            throw new MobileSdException("graph " + spec.name + " failed to run (" + LiteRtStatus.describe(status) + ")",
                    "see the runtime log; on the GPU, try --accelerator cpu");
        }
        Object[] outs = new Object[outputSpecs.length];
        for (int i = 0; i < outputBuffers.length; i++) {
            if (keepOutputs) {
                outs[i] = new OutputBuffer(this, i, runs);
                continue;
            }
            check(lib.LiteRtLockTensorBuffer(outputBuffers[i], host, LiteRtLibrary.LOCK_READ), "lock an output buffer");
            try {
                outs[i] = TensorBufferCopy.read(host.getValue(), outputSpecs[i]);
            } finally {
                lib.LiteRtUnlockTensorBuffer(outputBuffers[i]);
            }
        }
        Map<String, Object> result = new LinkedHashMap<>();
        for (TensorSpec o : spec.outputs) {
            for (int i = 0; i < outputSpecs.length; i++) {
                if (outputSpecs[i] == o) {
                    result.put(o.name, outs[i]);
                }
            }
        }
        return result;
    }

    @Override
    public synchronized void close() {
        for (Pointer b : buffers) {
            lib.LiteRtDestroyTensorBuffer(b);
        }
        buffers.clear();
        if (compiled != null) {
            lib.LiteRtDestroyCompiledModel(compiled);
            compiled = null;
        }
        if (model != null) {
            lib.LiteRtDestroyModel(model);
            model = null;
        }
    }
}
