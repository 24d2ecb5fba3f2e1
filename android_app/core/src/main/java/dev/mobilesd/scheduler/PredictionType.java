package dev.mobilesd.scheduler;

/** What the UNet predicts: the noise (SD 1.x, SD 2.x 512) or the velocity (SD 2.x 768). */
public enum PredictionType {
    EPSILON, V_PREDICTION
}
