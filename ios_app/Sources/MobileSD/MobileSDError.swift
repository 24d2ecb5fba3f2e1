import Foundation

/// A user-facing error: what is wrong and what to do about it (the Swift side of `mobilesd.errors.MobileSDError`).
public struct MobileSDError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public let problem: String
    public let fix: String?

    public init(_ problem: String, fix: String? = nil) {
        self.problem = problem
        self.fix = fix
    }

    public var description: String {
        guard let fix else { return problem }
        return "\(problem)\n  fix: \(fix)"
    }

    public var errorDescription: String? { description }
}
