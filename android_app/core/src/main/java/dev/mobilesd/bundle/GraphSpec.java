package dev.mobilesd.bundle;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** One graph of a bundle (manifest {@code graphs[]}): its file, I/O in signature order, and chunk aliases. */
public final class GraphSpec {
    public final String name;
    public final String role;
    public final String file;
    public final String format;
    public final String precision;
    public final String sha256;
    public final long sizeBytes;
    public final List<TensorSpec> inputs;
    public final List<TensorSpec> outputs;
    /** UNet chunks: after the call, store tensor {@code value} also under name {@code key}. */
    public final Map<String, String> aliases;

    public GraphSpec(String name, String role, String file, String format, String precision, String sha256,
                     long sizeBytes, List<TensorSpec> inputs, List<TensorSpec> outputs, Map<String, String> aliases) {
        this.name = name;
        this.role = role;
        this.file = file;
        this.format = format;
        this.precision = precision;
        this.sha256 = sha256;
        this.sizeBytes = sizeBytes;
        this.inputs = Collections.unmodifiableList(inputs);
        this.outputs = Collections.unmodifiableList(outputs);
        this.aliases = Collections.unmodifiableMap(new LinkedHashMap<>(aliases));
    }

    public TensorSpec input(String inputName) {
        for (TensorSpec t : inputs) {
            if (t.name.equals(inputName)) {
                return t;
            }
        }
        return null;
    }
}
