package dev.mobilesd.runtime;

/** Where a graph runs. GPU is the app's default; CPU only when asked for. */
public enum Accelerator {
    CPU("cpu"), GPU("gpu");

    public final String reportName;

    Accelerator(String reportName) {
        this.reportName = reportName;
    }

    public static Accelerator parse(String name) {
        for (Accelerator a : values()) {
            if (a.reportName.equalsIgnoreCase(name)) {
                return a;
            }
        }
        throw new dev.mobilesd.MobileSdException("unknown accelerator '" + name + "'", "use cpu or gpu");
    }
}
