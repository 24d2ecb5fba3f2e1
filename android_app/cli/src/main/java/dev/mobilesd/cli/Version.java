package dev.mobilesd.cli;

/** The app core's version (reports' measured_by.tool). */
final class Version {
    static final String VERSION = "0.1.0";

    private Version() {
    }
}
