package dev.mobilesd.litert;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import dev.mobilesd.MobileSdException;
import dev.mobilesd.bundle.GraphSpec;
import dev.mobilesd.runtime.Accelerator;
import dev.mobilesd.runtime.GraphRunner;
import dev.mobilesd.runtime.GraphRunnerFactory;
import java.nio.file.Path;

/**
 * Opens graphs with LiteRT's C API through one LiteRT environment. The GPU accelerator is a separate library
 * ({@code libLiteRtWebGpuAccelerator.so} in the desktop wheel; the {@code litert-gpu} AAR's on Android) that
 * the environment loads from its runtime library directory. GPU runs use the GPU only (a graph that is not
 * fully accelerated is refused) unless CPU fallback is asked for.
 */
public final class LiteRtRunnerFactory implements GraphRunnerFactory, AutoCloseable {
    private final LiteRtLibrary lib;
    private final Accelerator accelerator;
    private final boolean allowCpuFallback;
    private final String description;
    private Pointer environment;
    @SuppressWarnings("unused")   // the environment keeps a pointer to the directory string: keep it alive
    private final Memory runtimeDirString;

    /**
     * @param library path of {@code libLiteRt.so}, or its name ("LiteRt") to let JNA search the library path
     * @param runtimeLibraryDir where the accelerator libraries are (may be null: then only LD_LIBRARY_PATH is searched)
     */
    public LiteRtRunnerFactory(String library, String runtimeLibraryDir, Accelerator accelerator, boolean allowCpuFallback) {
        try {
            this.lib = Native.load(library, LiteRtLibrary.class);
        } catch (UnsatisfiedLinkError e) {
            throw new MobileSdException("cannot load the LiteRT library '" + library + "': " + e.getMessage(),
                    "install ai-edge-litert in the venv (scripts/setup.sh), or pass --litert-lib PATH/libLiteRt.so");
        }
        this.accelerator = accelerator;
        this.allowCpuFallback = allowCpuFallback;
        PointerByReference ref = new PointerByReference();
        int status;
        if (runtimeLibraryDir != null) {
            runtimeDirString = new Memory(runtimeLibraryDir.getBytes(java.nio.charset.StandardCharsets.UTF_8).length + 1L);
            runtimeDirString.setString(0, runtimeLibraryDir, "UTF-8");
            LiteRtLibrary.LiteRtEnvOption option = new LiteRtLibrary.LiteRtEnvOption();
            option.tag = LiteRtLibrary.ENV_OPTION_RUNTIME_LIBRARY_DIR;
            option.value = new LiteRtLibrary.LiteRtAny();
            option.value.type = LiteRtLibrary.ANY_TYPE_STRING;
            option.value.value = Pointer.nativeValue(runtimeDirString);
            option.write();
            status = lib.LiteRtCreateEnvironment(1, option, ref);
        } else {
            runtimeDirString = null;
            status = lib.LiteRtCreateEnvironment(0, null, ref);
        }
        if (status != 0) {
            throw new MobileSdException("LiteRT could not create its environment (" + LiteRtStatus.describe(status) + ")",
                    "check the LiteRT installation (ai-edge-litert 2.x)");
        }
        environment = ref.getValue();
        this.description = "LiteRT C API via JNA (" + library + ")";
    }

    @Override
    public GraphRunner open(GraphSpec spec, Path file) {
        if (environment == null) {
            throw new IllegalStateException("the LiteRT environment is closed");
        }
        int accelerators = accelerator == Accelerator.GPU
                ? LiteRtLibrary.HW_ACCELERATOR_GPU | (allowCpuFallback ? LiteRtLibrary.HW_ACCELERATOR_CPU : 0)
                : LiteRtLibrary.HW_ACCELERATOR_CPU;
        return new LiteRtGraphRunner(lib, environment, spec, file, accelerators,
                accelerator == Accelerator.GPU && !allowCpuFallback);
    }

    @Override
    public String runtimeDescription() {
        return description;
    }

    @Override
    public Accelerator accelerator() {
        return accelerator;
    }

    @Override
    public void close() {
        if (environment != null) {
            lib.LiteRtDestroyEnvironment(environment);
            environment = null;
        }
    }
}
