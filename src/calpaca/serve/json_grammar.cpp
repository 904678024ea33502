#include "calpaca/serve/json_grammar.h"

#include <fmt/format.h>

#include <array>
#include <map>
#include <set>

namespace calpaca::serve {

using Json = nlohmann::ordered_json;

namespace {

using Seq = GrammarBuilder::Seq;
using Elem = GrammarBuilder::Elem;

constexpr int kMaxWs = 20;         // json_object mode: whitespace bytes between two tokens
constexpr int kMaxLeadWs = 4;      // before the value
constexpr int kMaxIntDigits = 16;
constexpr int kMaxFracDigits = 16;
constexpr int kMaxExpDigits = 3;
constexpr int64_t kMaxLength = 4096;  // largest maxLength / maxItems / minLength we expand

class JsonBuilder {
public:
    explicit JsonBuilder(bool free_ws) : free_ws_(free_ws) {
        std::bitset<256> ws;
        for (char c : std::string(" \t\n\r")) ws.set(static_cast<uint8_t>(c));
        ws_char_ = b.bytes(ws);
        if (free_ws_) ws_ = b.rep({ws_char_}, 0, kMaxWs);
        sp_ = b.opt(b.lit(" "));
    }

    GrammarBuilder b;

    // between two tokens (json_object mode only)
    Seq gap() const { return free_ws_ ? Seq{ws_} : Seq{}; }
    // after ':' and ','
    Seq sep() const { return free_ws_ ? Seq{ws_} : Seq{sp_}; }
    Elem lead_ws() { return b.rep({ws_char_}, 0, kMaxLeadWs); }

    static Seq cat(std::initializer_list<Seq> parts) {
        Seq s;
        for (const Seq& p : parts) s.insert(s.end(), p.begin(), p.end());
        return s;
    }

    // One character inside a JSON string: printable ASCII except '"' and '\', a valid UTF-8
    // multi-byte sequence, or an escape.
    Elem string_char() {
        if (char_rule_ >= 0) return b.ref(char_rule_);
        std::bitset<256> ascii;
        for (int c = 0x20; c <= 0x7F; ++c)
            if (c != '"' && c != '\\') ascii.set(static_cast<size_t>(c));
        auto r = [&](int lo, int hi) { return b.byte_range(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi)); };
        const Elem cont = r(0x80, 0xBF);
        std::bitset<256> esc1;
        for (char c : std::string("\"\\/bfnrt")) esc1.set(static_cast<uint8_t>(c));
        std::bitset<256> hex;
        for (char c : std::string("0123456789abcdefABCDEF")) hex.set(static_cast<uint8_t>(c));
        const Elem h = b.bytes(hex);
        char_rule_ = b.rule({
            {b.bytes(ascii)},
            {r(0xC2, 0xDF), cont},
            {r(0xE0, 0xE0), r(0xA0, 0xBF), cont},
            {r(0xE1, 0xEC), cont, cont},
            {r(0xED, 0xED), r(0x80, 0x9F), cont},
            {r(0xEE, 0xEF), cont, cont},
            {r(0xF0, 0xF0), r(0x90, 0xBF), cont, cont},
            {r(0xF1, 0xF3), cont, cont, cont},
            {r(0xF4, 0xF4), r(0x80, 0x8F), cont, cont},
            cat({b.lit("\\"), {b.bytes(esc1)}}),
            cat({b.lit("\\u"), {h, h, h, h}}),
        });
        return b.ref(char_rule_);
    }

    Elem string(int64_t min_len = 0, int64_t max_len = -1) {
        if (min_len == 0 && max_len < 0) {
            if (string_rule_ < 0) string_rule_ = b.rule({cat({b.lit("\""), {b.star({string_char()})}, b.lit("\"")})});
            return b.ref(string_rule_);
        }
        return b.ref(b.rule({cat({b.lit("\""), {b.rep({string_char()}, static_cast<int>(min_len), static_cast<int>(max_len))},
                                  b.lit("\"")})}));
    }

    Elem integer() {
        if (int_rule_ >= 0) return b.ref(int_rule_);
        const Elem digit = b.byte_range('0', '9');
        const Elem int_part = b.alt({b.lit("0"), {b.byte_range('1', '9'), b.rep({digit}, 0, kMaxIntDigits - 1)}});
        int_rule_ = b.rule({{b.opt(b.lit("-")), int_part}});
        return b.ref(int_rule_);
    }

    Elem number() {
        if (num_rule_ >= 0) return b.ref(num_rule_);
        const Elem digit = b.byte_range('0', '9');
        std::bitset<256> e, pm;
        e.set('e'), e.set('E'), pm.set('+'), pm.set('-');
        const Elem frac = b.opt(cat({b.lit("."), {b.rep({digit}, 1, kMaxFracDigits)}}));
        const Elem exp = b.opt({b.bytes(e), b.opt({b.bytes(pm)}), b.rep({digit}, 1, kMaxExpDigits)});
        num_rule_ = b.rule({{integer(), frac, exp}});
        return b.ref(num_rule_);
    }

    Elem literal(const Json& v) { return b.ref(b.rule({b.lit(v.dump())})); }

    // Any JSON value.
    Elem any_value() {
        if (value_rule_ >= 0) return b.ref(value_rule_);
        value_rule_ = b.new_rule();
        const Elem v = b.ref(value_rule_);
        const Elem obj = object_of(string(), v);
        const Elem arr = array_of(v, 0, -1);
        b.define(value_rule_, {{obj}, {arr}, {string()}, {number()}, b.lit("true"), b.lit("false"), b.lit("null")});
        return v;
    }

    // '{' (key ':' value (',' key ':' value)*)? '}' with free keys.
    Elem object_of(Elem key, Elem value) {
        const Seq member = cat({{key}, gap(), b.lit(":"), sep(), {value}, gap()});
        const Seq more = cat({b.lit(","), sep(), member});
        return b.ref(b.rule({cat({b.lit("{"), gap(), {b.opt(cat({member, {b.star(more)}}))}, b.lit("}")})}));
    }

    // '[' (v (',' v){min-1,max-1})? ']'
    Elem array_of(Elem value, int64_t min_items, int64_t max_items) {
        const Seq item = cat({{value}, gap()});
        const Seq more = cat({b.lit(","), sep(), item});
        Seq body;
        if (max_items == 0) {
            body = {};
        } else {
            const int lo = static_cast<int>(std::max<int64_t>(min_items - 1, 0));
            const int hi = max_items < 0 ? -1 : static_cast<int>(max_items - 1);
            const Seq items = cat({item, {b.rep(more, lo, hi)}});
            body = min_items == 0 ? Seq{b.opt(items)} : items;
        }
        return b.ref(b.rule({cat({b.lit("["), gap(), body, b.lit("]")})}));
    }

private:
    bool free_ws_;
    Elem ws_char_{}, ws_{}, sp_{};
    int char_rule_ = -1, string_rule_ = -1, int_rule_ = -1, num_rule_ = -1, value_rule_ = -1;
};

// ---------------------------------------------------------------------------------------------
// JSON Schema → grammar

const std::set<std::string> kAnnotations = {"title",   "description", "default",  "examples",  "$schema", "$id",
                                            "$comment", "deprecated", "readOnly", "writeOnly", "$defs",   "definitions"};
const std::set<std::string> kSupported = {"type",      "properties", "required", "additionalProperties",
                                          "items",     "minItems",   "maxItems", "minLength",
                                          "maxLength", "enum",       "const",    "anyOf",
                                          "oneOf",     "allOf",      "$ref",     "nullable"};

class SchemaCompiler {
public:
    SchemaCompiler(JsonBuilder& jb, const Json& root) : jb_(jb), b_(jb.b), root_(root) {}

    Elem compile(const Json& s, const std::string& path) {
        if (s.is_boolean()) {
            if (!s.get<bool>()) err(path, "the schema false allows no value");
            return jb_.any_value();
        }
        if (!s.is_object()) err(path, "a schema must be an object or a boolean");
        for (const auto& [k, v] : s.items())
            if (!kAnnotations.count(k) && !kSupported.count(k)) err(path, fmt::format("unsupported keyword '{}'", k));
        Elem e = compile_core(s, path);
        if (s.contains("nullable")) {
            if (!s["nullable"].is_boolean()) err(path + "/nullable", "must be a boolean");
            if (s["nullable"].get<bool>()) e = b_.alt({{e}, b_.lit("null")});
        }
        return e;
    }

private:
    [[noreturn]] static void err(const std::string& path, const std::string& msg) {
        throw SchemaError(fmt::format("at {}: {}", path.empty() ? "#" : path, msg));
    }

    static bool has_constraints(const Json& s, std::initializer_list<const char*> except) {
        for (const auto& [k, v] : s.items()) {
            if (kAnnotations.count(k) || k == "nullable") continue;
            bool skip = false;
            for (const char* e : except) skip |= k == e;
            if (!skip) return true;
        }
        return false;
    }

    int64_t get_count(const Json& s, const char* key, const std::string& path, int64_t def) {
        if (!s.contains(key)) return def;
        const Json& v = s[key];
        if (!v.is_number_integer() || v.get<int64_t>() < 0)
            err(path + "/" + key, "must be a non-negative integer");
        const int64_t n = v.get<int64_t>();
        if (n > kMaxLength) err(path + "/" + key, fmt::format("values above {} are not supported", kMaxLength));
        return n;
    }

    Elem compile_core(const Json& s, const std::string& path) {
        if (s.contains("$ref")) {
            if (has_constraints(s, {"$ref"})) err(path, "$ref together with other constraints is not supported");
            return ref(s["$ref"], path + "/$ref");
        }
        if (s.contains("const")) return jb_.literal(s["const"]);
        if (s.contains("enum")) {
            const Json& e = s["enum"];
            if (!e.is_array() || e.empty()) err(path + "/enum", "must be a non-empty array");
            std::vector<Seq> alts;
            for (const Json& v : e) alts.push_back({jb_.literal(v)});
            return b_.alt(std::move(alts));
        }
        for (const char* key : {"anyOf", "oneOf"}) {
            if (!s.contains(key)) continue;
            if (has_constraints(s, {key})) err(path, fmt::format("{} together with other constraints is not supported", key));
            const Json& list = s[key];
            if (!list.is_array() || list.empty()) err(path + "/" + key, "must be a non-empty array of schemas");
            std::vector<Seq> alts;
            for (size_t i = 0; i < list.size(); ++i)
                alts.push_back({compile(list[i], fmt::format("{}/{}/{}", path, key, i))});
            return b_.alt(std::move(alts));
        }
        if (s.contains("allOf")) {
            const Json& list = s["allOf"];
            if (!list.is_array() || list.size() != 1 || has_constraints(s, {"allOf"}))
                err(path + "/allOf", "only allOf with exactly one schema and no sibling constraints is supported");
            return compile(list[0], path + "/allOf/0");
        }
        std::vector<std::string> types;
        if (s.contains("type")) {
            const Json& t = s["type"];
            if (t.is_string()) {
                types.push_back(t.get<std::string>());
            } else if (t.is_array() && !t.empty()) {
                for (const Json& x : t) {
                    if (!x.is_string()) err(path + "/type", "must be a type name or a list of type names");
                    types.push_back(x.get<std::string>());
                }
            } else {
                err(path + "/type", "must be a type name or a list of type names");
            }
        } else if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) {
            types.push_back("object");
        } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
            types.push_back("array");
        } else if (s.contains("minLength") || s.contains("maxLength")) {
            types.push_back("string");
        } else {
            return jb_.any_value();
        }
        std::vector<Seq> alts;
        for (const std::string& t : types) alts.push_back({typed(t, s, path)});
        return alts.size() == 1 ? alts[0][0] : b_.alt(std::move(alts));
    }

    Elem typed(const std::string& t, const Json& s, const std::string& path) {
        if (t == "string") {
            const int64_t lo = get_count(s, "minLength", path, 0), hi = get_count(s, "maxLength", path, -1);
            if (hi >= 0 && hi < lo) err(path, "maxLength is smaller than minLength");
            return jb_.string(lo, hi);
        }
        if (t == "integer") return jb_.integer();
        if (t == "number") return jb_.number();
        if (t == "boolean") return b_.alt({b_.lit("true"), b_.lit("false")});
        if (t == "null") return b_.alt({b_.lit("null")});
        if (t == "array") {
            const int64_t lo = get_count(s, "minItems", path, 0), hi = get_count(s, "maxItems", path, -1);
            if (hi >= 0 && hi < lo) err(path, "maxItems is smaller than minItems");
            Elem item = s.contains("items") ? compile(s["items"], path + "/items") : jb_.any_value();
            return jb_.array_of(item, lo, hi);
        }
        if (t == "object") return object(s, path);
        err(path + "/type", fmt::format("unknown type '{}'", t));
    }

    Elem object(const Json& s, const std::string& path) {
        std::set<std::string> required;
        if (s.contains("required")) {
            const Json& r = s["required"];
            if (!r.is_array()) err(path + "/required", "must be an array of property names");
            for (const Json& x : r) {
                if (!x.is_string()) err(path + "/required", "must be an array of property names");
                required.insert(x.get<std::string>());
            }
        }
        const Json* props = nullptr;
        if (s.contains("properties")) {
            props = &s["properties"];
            if (!props->is_object()) err(path + "/properties", "must be an object");
        }
        for (const std::string& r : required)
            if (!props || !props->contains(r))
                err(path + "/required", fmt::format("required property '{}' is not in properties", r));
        if (!props || props->empty()) {
            const Json add = s.contains("additionalProperties") ? s["additionalProperties"] : Json(true);
            if (add.is_boolean() && !add.get<bool>()) return b_.alt({b_.lit("{}")});
            Elem v = add.is_boolean() ? jb_.any_value() : compile(add, path + "/additionalProperties");
            return jb_.object_of(jb_.string(), v);
        }
        struct Prop {
            std::string key;
            Elem value;
            bool required;
        };
        std::vector<Prop> list;
        for (const auto& [k, v] : props->items())
            list.push_back({k, compile(v, path + "/properties/" + k), required.count(k) > 0});
        // rest[k][first]: the properties k.. given whether one was already written (then each needs a ',')
        const size_t n = list.size();
        std::vector<std::array<int, 2>> rest(n + 1);
        rest[n] = {b_.rule({{}}), b_.rule({{}})};
        for (size_t k = n; k-- > 0;) {
            const Prop& p = list[k];
            const Seq kv = JsonBuilder::cat({b_.lit(Json(p.key).dump()), jb_.gap(), b_.lit(":"), jb_.sep(), {p.value}, jb_.gap()});
            for (int first = 0; first < 2; ++first) {
                Seq take = first ? kv : JsonBuilder::cat({b_.lit(","), jb_.sep(), kv});
                take.push_back(b_.ref(rest[k + 1][0]));
                std::vector<Seq> alts{take};
                if (!p.required) alts.push_back({b_.ref(rest[k + 1][first])});
                rest[k][first] = b_.rule(std::move(alts));
            }
        }
        return b_.ref(b_.rule({JsonBuilder::cat({b_.lit("{"), jb_.gap(), {b_.ref(rest[0][1])}, b_.lit("}")})}));
    }

    Elem ref(const Json& r, const std::string& path) {
        if (!r.is_string()) err(path, "must be a string");
        const std::string target = r.get<std::string>();
        auto it = refs_.find(target);
        if (it != refs_.end()) return b_.ref(it->second);
        const Json* s = nullptr;
        if (target == "#") {
            s = &root_;
        } else {
            for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
                const std::string p = prefix;
                if (target.rfind(p, 0) != 0) continue;
                const std::string name = target.substr(p.size());
                const std::string section = p.substr(2, p.size() - 3);
                if (root_.contains(section) && root_[section].is_object() && root_[section].contains(name))
                    s = &root_[section][name];
            }
            if (!s) err(path, fmt::format("cannot resolve '{}' (supported: '#', '#/$defs/NAME', '#/definitions/NAME')", target));
        }
        const int rule = b_.new_rule();
        refs_[target] = rule;
        b_.define(rule, {{compile(*s, target)}});
        return b_.ref(rule);
    }

    JsonBuilder& jb_;
    GrammarBuilder& b_;
    const Json& root_;
    std::map<std::string, int> refs_;
};

}  // namespace

std::shared_ptr<const Grammar> json_object_grammar() {
    static const std::shared_ptr<const Grammar> g = [] {
        JsonBuilder jb(true);
        const Elem obj = jb.object_of(jb.string(), jb.any_value());
        const int root = jb.b.rule({{jb.lead_ws(), obj}});
        return jb.b.finish(root);
    }();
    return g;
}

std::shared_ptr<const Grammar> json_schema_grammar(const nlohmann::ordered_json& schema) {
    // The compiler recurses over the schema: refuse absurd nesting before it starts (iteratively).
    constexpr size_t kMaxDepth = 128;
    std::vector<std::pair<const Json*, size_t>> todo{{&schema, 1}};
    while (!todo.empty()) {
        auto [v, d] = todo.back();
        todo.pop_back();
        if (d > kMaxDepth) throw SchemaError(fmt::format("at #: the schema is nested more than {} levels deep", kMaxDepth));
        if (v->is_structured())
            for (const Json& c : *v) todo.emplace_back(&c, d + 1);
    }
    JsonBuilder jb(false);
    SchemaCompiler c(jb, schema);
    const Elem v = c.compile(schema, "#");
    const int root = jb.b.rule({{jb.lead_ws(), v}});
    return jb.b.finish(root);
}

}  // namespace calpaca::serve
