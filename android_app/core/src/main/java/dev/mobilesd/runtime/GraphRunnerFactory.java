package dev.mobilesd.runtime;

import dev.mobilesd.bundle.GraphSpec;
import java.nio.file.Path;

/** Opens (loads and compiles) one graph of a bundle on some runtime and accelerator. */
public interface GraphRunnerFactory {
    GraphRunner open(GraphSpec spec, Path file);

    /** What ran the graphs, for reports: e.g. "LiteRT C API (libLiteRt.so)". */
    String runtimeDescription();

    Accelerator accelerator();
}
