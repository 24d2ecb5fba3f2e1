import Foundation

/// A JSON Schema (draft 2020-12) validator for the subset the bundle manifest schema uses
/// (mobilesd/schemas/manifest.schema.json): type, const, enum, required, properties, additionalProperties,
/// propertyNames, minProperties, items, minItems, maxItems, uniqueItems, minLength, maxLength, pattern,
/// minimum, maximum, exclusiveMinimum, exclusiveMaximum, local $ref, allOf, anyOf, oneOf, not, if/then/else.
/// Written here because Foundation has no JSON Schema support and the package takes no dependencies; a
/// keyword outside the subset is an error, so a schema that grows cannot be half-checked in silence.
public struct JSONSchemaValidator {
    public let schema: JSONValue
    private static let annotations: Set<String> = ["$schema", "$id", "$comment", "$defs", "definitions", "title",
                                                   "description", "default", "examples", "format", "deprecated",
                                                   "readOnly", "writeOnly"]

    public init(schema: JSONValue) {
        self.schema = schema
    }

    public init(contentsOf url: URL) throws {
        self.init(schema: try JSONValue.parse(contentsOf: url))
    }

    /// Every violation as "field: problem"; empty when `instance` is valid.
    public func problems(_ instance: JSONValue) throws -> [String] {
        var out: [String] = []
        try check(instance, against: schema, at: "", into: &out)
        return out
    }

    private func resolve(_ ref: String) throws -> JSONValue {
        guard ref.hasPrefix("#") else { throw MobileSDError("schema $ref \(ref) is not local", fix: "use #/... references") }
        var node = schema
        for raw in ref.dropFirst().split(separator: "/") {
            let key = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            guard let next = node[key] else { throw MobileSDError("schema $ref \(ref) does not resolve", fix: "fix the schema") }
            node = next
        }
        return node
    }

    private func isValid(_ instance: JSONValue, _ schema: JSONValue, _ path: String) throws -> Bool {
        var out: [String] = []
        try check(instance, against: schema, at: path, into: &out)
        return out.isEmpty
    }

    private static func field(_ path: String) -> String { path.isEmpty ? "(top level)" : path }

    private func check(_ value: JSONValue, against schema: JSONValue, at path: String, into out: inout [String]) throws {
        if case .bool(let allowed) = schema {
            if !allowed { out.append("\(Self.field(path)): no value is allowed here") }
            return
        }
        guard let s = schema.object else { throw MobileSDError("schema at \(Self.field(path)) is not an object") }
        let here = Self.field(path)
        for (keyword, rule) in s.sorted(by: { $0.key < $1.key }) {
            switch keyword {
            case _ where Self.annotations.contains(keyword):
                continue
            case "$ref":
                try check(value, against: try resolve(rule.string ?? ""), at: path, into: &out)
            case "type":
                let allowed = rule.array?.compactMap(\.string) ?? [rule.string ?? ""]
                let actual = value.schemaType
                if !(allowed.contains(actual) || (actual == "integer" && allowed.contains("number"))) {
                    out.append("\(here): is \(actual), expected \(allowed.joined(separator: " or "))")
                }
            case "const":
                if value != rule { out.append("\(here): must be \(Self.render(rule)), is \(Self.render(value))") }
            case "enum":
                if !(rule.array ?? []).contains(value) {
                    out.append("\(here): \(Self.render(value)) is not one of \((rule.array ?? []).map(Self.render).joined(separator: ", "))")
                }
            case "required":
                if let o = value.object {
                    for key in (rule.array ?? []).compactMap(\.string) where o[key] == nil {
                        out.append("\(path.isEmpty ? key : path + "." + key): is missing")
                    }
                }
            case "properties":
                if let o = value.object, let props = rule.object {
                    for (key, sub) in props.sorted(by: { $0.key < $1.key }) {
                        if let v = o[key] { try check(v, against: sub, at: Self.join(path, key), into: &out) }
                    }
                }
            case "additionalProperties":
                if let o = value.object {
                    let known = Set((s["properties"]?.object ?? [:]).keys)
                    for (key, v) in o.sorted(by: { $0.key < $1.key }) where !known.contains(key) {
                        try check(v, against: rule, at: Self.join(path, key), into: &out)
                    }
                }
            case "propertyNames":
                if let o = value.object {
                    for key in o.keys.sorted() {
                        var sub: [String] = []
                        try check(.string(key), against: rule, at: path, into: &sub)
                        if !sub.isEmpty { out.append("\(here): bad key \(Self.render(.string(key)))") }
                    }
                }
            case "minProperties":
                if let o = value.object, let n = rule.int, o.count < n { out.append("\(here): has \(o.count) keys, needs at least \(n)") }
            case "items":
                if let a = value.array {
                    for (i, v) in a.enumerated() { try check(v, against: rule, at: "\(path)[\(i)]", into: &out) }
                }
            case "minItems":
                if let a = value.array, let n = rule.int, a.count < n { out.append("\(here): has \(a.count) items, needs at least \(n)") }
            case "maxItems":
                if let a = value.array, let n = rule.int, a.count > n { out.append("\(here): has \(a.count) items, at most \(n) allowed") }
            case "uniqueItems":
                if rule.bool == true, let a = value.array {
                    outer: for i in a.indices { for j in a.indices where j > i && a[i] == a[j] {
                        out.append("\(here): items \(i) and \(j) are equal")
                        break outer
                    } }
                }
            case "minLength":
                if let str = value.string, let n = rule.int, str.unicodeScalars.count < n { out.append("\(here): is shorter than \(n)") }
            case "maxLength":
                if let str = value.string, let n = rule.int, str.unicodeScalars.count > n { out.append("\(here): is longer than \(n)") }
            case "pattern":
                if let str = value.string, let p = rule.string {
                    guard let regex = try? NSRegularExpression(pattern: p) else {
                        throw MobileSDError("schema pattern \(p) does not compile", fix: "fix the schema")
                    }
                    if regex.firstMatch(in: str, range: NSRange(str.startIndex..., in: str)) == nil {
                        out.append("\(here): \(Self.render(value)) does not match \(p)")
                    }
                }
            case "minimum":
                if let x = value.double, let m = rule.double, x < m { out.append("\(here): \(x) is less than the minimum \(m)") }
            case "maximum":
                if let x = value.double, let m = rule.double, x > m { out.append("\(here): \(x) is more than the maximum \(m)") }
            case "exclusiveMinimum":
                if let x = value.double, let m = rule.double, x <= m { out.append("\(here): \(x) must be more than \(m)") }
            case "exclusiveMaximum":
                if let x = value.double, let m = rule.double, x >= m { out.append("\(here): \(x) must be less than \(m)") }
            case "allOf":
                for sub in rule.array ?? [] { try check(value, against: sub, at: path, into: &out) }
            case "anyOf":
                var any = false
                for sub in rule.array ?? [] {
                    if try isValid(value, sub, path) { any = true; break }
                }
                if !any { out.append("\(here): matches none of the anyOf alternatives") }
            case "oneOf":
                var matches = 0
                for sub in rule.array ?? [] {
                    if try isValid(value, sub, path) { matches += 1 }
                }
                if matches != 1 { out.append("\(here): matches \(matches) of the oneOf alternatives, expected exactly 1") }
            case "not":
                if try isValid(value, rule, path) { out.append("\(here): must not match the 'not' schema") }
            case "if":
                let branch = try isValid(value, rule, path) ? s["then"] : s["else"]
                if let branch { try check(value, against: branch, at: path, into: &out) }
            case "then", "else":
                continue  // applied through "if"
            default:
                throw MobileSDError("the schema uses keyword '\(keyword)' (at \(here)), which this validator does not implement",
                                    fix: "extend JSONSchemaValidator.swift")
            }
        }
    }

    private static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private static func render(_ v: JSONValue) -> String {
        guard let data = try? v.serialized(pretty: false), let s = String(data: data, encoding: .utf8) else { return "\(v)" }
        return s.count > 80 ? String(s.prefix(77)) + "..." : s
    }
}
