#include "core/broker/amqp_table.hpp"

#include <amqp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace celeriac::broker {
namespace {

amqp_bytes_t Borrow(const std::string& s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());  // rabbitmq-c only reads it when encoding
  return b;
}

Error TableError(std::string message) {
  return Error(ErrorCode::kInvalidArgument, "AMQP headers: " + std::move(message));
}

Status ToFieldValue(const Headers& value, amqp_pool_t* pool, int depth, amqp_field_value_t* out);

Status ToTable(const Headers& object, amqp_pool_t* pool, int depth, amqp_table_t* out) {
  if (depth > kMaxTableDepth) return TableError("nested deeper than " + std::to_string(kMaxTableDepth));
  out->num_entries = 0;
  out->entries = nullptr;
  if (object.empty()) return Ok();
  if (object.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return TableError("too many entries");
  }
  auto* entries = static_cast<amqp_table_entry_t*>(
      amqp_pool_alloc(pool, object.size() * sizeof(amqp_table_entry_t)));
  if (entries == nullptr) return Error(ErrorCode::kInternal, "AMQP headers: out of memory");
  int n = 0;
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    if (key.size() > 255) {
      return TableError("key longer than 255 bytes: \"" + key.substr(0, 40) + "...\"");
    }
    entries[n].key = Borrow(key);
    Status s = ToFieldValue(it.value(), pool, depth, &entries[n].value);
    if (!s.ok()) return s;
    ++n;
  }
  out->num_entries = n;
  out->entries = entries;
  return Ok();
}

Status ToFieldValue(const Headers& value, amqp_pool_t* pool, int depth, amqp_field_value_t* out) {
  using Type = Headers::value_t;
  switch (value.type()) {
    case Type::string:
      out->kind = AMQP_FIELD_KIND_UTF8;
      out->value.bytes = Borrow(value.get_ref<const std::string&>());
      return Ok();
    case Type::boolean:
      out->kind = AMQP_FIELD_KIND_BOOLEAN;
      out->value.boolean = value.get<bool>() ? 1 : 0;
      return Ok();
    case Type::number_integer: {
      const int64_t v = value.get<int64_t>();
      if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
        out->kind = AMQP_FIELD_KIND_I32;
        out->value.i32 = static_cast<int32_t>(v);
      } else if (v >= 0) {
        out->kind = AMQP_FIELD_KIND_I64;  // 'l': py-amqp reads it unsigned, same value
        out->value.i64 = v;
      } else {
        out->kind = AMQP_FIELD_KIND_U64;  // 'L': what py-amqp writes and reads as signed 64
        out->value.u64 = static_cast<uint64_t>(v);
      }
      return Ok();
    }
    case Type::number_unsigned: {
      const uint64_t v = value.get<uint64_t>();
      if (v <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        out->kind = AMQP_FIELD_KIND_I32;
        out->value.i32 = static_cast<int32_t>(v);
      } else {
        // 'l' carries the whole uint64 range: py-amqp (and FromAmqpTable) read it unsigned.
        out->kind = AMQP_FIELD_KIND_I64;
        out->value.u64 = v;
      }
      return Ok();
    }
    case Type::number_float:
      out->kind = AMQP_FIELD_KIND_F64;
      out->value.f64 = value.get<double>();
      return Ok();
    case Type::null:
      out->kind = AMQP_FIELD_KIND_VOID;
      return Ok();
    case Type::object:
      out->kind = AMQP_FIELD_KIND_TABLE;
      return ToTable(value, pool, depth + 1, &out->value.table);
    case Type::array: {
      out->kind = AMQP_FIELD_KIND_ARRAY;
      out->value.array.num_entries = 0;
      out->value.array.entries = nullptr;
      if (depth + 1 > kMaxTableDepth) {
        return TableError("nested deeper than " + std::to_string(kMaxTableDepth));
      }
      if (value.empty()) return Ok();
      if (value.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
        return TableError("array too long");
      }
      auto* items = static_cast<amqp_field_value_t*>(
          amqp_pool_alloc(pool, value.size() * sizeof(amqp_field_value_t)));
      if (items == nullptr) return Error(ErrorCode::kInternal, "AMQP headers: out of memory");
      int n = 0;
      for (const auto& item : value) {
        Status s = ToFieldValue(item, pool, depth + 1, &items[n]);
        if (!s.ok()) return s;
        ++n;
      }
      out->value.array.num_entries = n;
      out->value.array.entries = items;
      return Ok();
    }
    case Type::binary: {
      const auto& bin = value.get_binary();
      out->kind = AMQP_FIELD_KIND_BYTES;
      out->value.bytes.len = bin.size();
      out->value.bytes.bytes = const_cast<uint8_t*>(bin.data());
      return Ok();
    }
    case Type::discarded:
      break;
  }
  return TableError("a discarded JSON value cannot be sent");
}

Result<Headers> FromFieldValue(const amqp_field_value_t& v, int depth);

Result<Headers> FromTable(const amqp_table_t& table, int depth) {
  if (depth > kMaxTableDepth) {
    return Error(ErrorCode::kProtocol,
                 "AMQP headers nested deeper than " + std::to_string(kMaxTableDepth));
  }
  Headers out = Headers::object();
  for (int i = 0; i < table.num_entries; ++i) {
    const amqp_table_entry_t& e = table.entries[i];
    std::string key(static_cast<const char*>(e.key.bytes), e.key.len);
    Result<Headers> value = FromFieldValue(e.value, depth);
    if (!value.ok()) return value.error();
    // Like a Python dict built from the table: a repeated key keeps its place, last value wins.
    out[std::move(key)] = std::move(value).value();
  }
  return out;
}

Result<Headers> FromFieldValue(const amqp_field_value_t& v, int depth) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return Headers(std::string(static_cast<const char*>(v.value.bytes.bytes), v.value.bytes.len));
    case AMQP_FIELD_KIND_BOOLEAN:
      return Headers(v.value.boolean != 0);
    case AMQP_FIELD_KIND_I8:
      return Headers(static_cast<int64_t>(v.value.i8));
    case AMQP_FIELD_KIND_U8:
      return Headers(static_cast<int64_t>(v.value.u8));
    case AMQP_FIELD_KIND_I16:
      return Headers(static_cast<int64_t>(v.value.i16));
    case AMQP_FIELD_KIND_U16:
      return Headers(static_cast<int64_t>(v.value.u16));
    case AMQP_FIELD_KIND_I32:
      return Headers(static_cast<int64_t>(v.value.i32));
    case AMQP_FIELD_KIND_U32:
      return Headers(static_cast<int64_t>(v.value.u32));
    case AMQP_FIELD_KIND_I64: {
      // py-amqp reads 'l' as unsigned 64; so do we, to see what a Python worker sees.
      const uint64_t u = v.value.u64;
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Headers(static_cast<int64_t>(u));
      }
      return Headers(u);
    }
    case AMQP_FIELD_KIND_U64:
      // 'L' is what py-amqp writes for big ints, signed.
      return Headers(static_cast<int64_t>(v.value.u64));
    case AMQP_FIELD_KIND_F32:
      return Headers(static_cast<double>(v.value.f32));
    case AMQP_FIELD_KIND_F64:
      return Headers(v.value.f64);
    case AMQP_FIELD_KIND_DECIMAL: {
      // Signed on the wire ('D' = scale octet + signed 32-bit), like py-amqp's Decimal.
      const auto unscaled = static_cast<int32_t>(v.value.decimal.value);
      return Headers(static_cast<double>(unscaled) / std::pow(10.0, v.value.decimal.decimals));
    }
    case AMQP_FIELD_KIND_TIMESTAMP:
      return Headers(v.value.u64);
    case AMQP_FIELD_KIND_VOID:
      return Headers(nullptr);
    case AMQP_FIELD_KIND_TABLE:
      return FromTable(v.value.table, depth + 1);
    case AMQP_FIELD_KIND_ARRAY: {
      if (depth + 1 > kMaxTableDepth) {
        return Error(ErrorCode::kProtocol,
                     "AMQP headers nested deeper than " + std::to_string(kMaxTableDepth));
      }
      Headers out = Headers::array();
      for (int i = 0; i < v.value.array.num_entries; ++i) {
        Result<Headers> item = FromFieldValue(v.value.array.entries[i], depth + 1);
        if (!item.ok()) return item.error();
        out.push_back(std::move(item).value());
      }
      return out;
    }
    default:
      break;
  }
  return Error(ErrorCode::kProtocol,
               std::string("AMQP headers: unknown field kind '") + static_cast<char>(v.kind) + "'");
}

// An amqp_pool_t that is emptied when it goes out of scope.
class ScopedPool {
 public:
  explicit ScopedPool(size_t block = 4096) { init_amqp_pool(&pool_, block); }
  ~ScopedPool() { empty_amqp_pool(&pool_); }
  ScopedPool(const ScopedPool&) = delete;
  ScopedPool& operator=(const ScopedPool&) = delete;
  amqp_pool_t* get() { return &pool_; }

 private:
  amqp_pool_t pool_;
};

}  // namespace

Status ToAmqpTable(const Headers& headers, amqp_pool_t* pool, amqp_table_t* out) {
  out->num_entries = 0;
  out->entries = nullptr;
  if (!headers.is_object()) {
    return TableError(std::string("must be a JSON object, not ") + headers.type_name());
  }
  return ToTable(headers, pool, 0, out);
}

Result<Headers> FromAmqpTable(const amqp_table_t& table) { return FromTable(table, 0); }

Result<std::string> EncodeTable(const Headers& headers) {
  ScopedPool pool;
  amqp_table_t table;
  Status s = ToAmqpTable(headers, pool.get(), &table);
  if (!s.ok()) return s.error();
  std::string out;
  for (size_t size = 4096;; size *= 2) {
    out.resize(size);
    amqp_bytes_t buffer{out.size(), out.data()};
    size_t offset = 0;
    const int rc = amqp_encode_table(buffer, &table, &offset);
    if (rc == AMQP_STATUS_OK) {
      out.resize(offset);
      return out;
    }
    if (rc != AMQP_STATUS_TABLE_TOO_BIG || size > (size_t{1} << 32)) {
      return Error(ErrorCode::kInvalidArgument,
                   std::string("AMQP headers: cannot encode: ") + amqp_error_string2(rc));
    }
  }
}

Result<Headers> DecodeTable(std::string_view bytes) {
  // One pool per thread, recycled after each call (no malloc per table: the worker decodes
  // every delivery's headers here).
  thread_local ScopedPool thread_pool;
  struct Recycle {
    amqp_pool_t* pool;
    ~Recycle() { recycle_amqp_pool(pool); }
  } recycle{thread_pool.get()};
  amqp_pool_t* pool = thread_pool.get();
  amqp_table_t table;
  amqp_bytes_t buffer{bytes.size(), const_cast<char*>(bytes.data())};
  size_t offset = 0;
  const int rc = amqp_decode_table(buffer, pool, &table, &offset);
  if (rc != AMQP_STATUS_OK) {
    return Error(ErrorCode::kProtocol,
                 std::string("AMQP field table: cannot decode: ") + amqp_error_string2(rc));
  }
  if (offset != bytes.size()) {
    return Error(ErrorCode::kProtocol, "AMQP field table: " +
                                           std::to_string(bytes.size() - offset) +
                                           " trailing bytes after the table");
  }
  return FromAmqpTable(table);
}

}  // namespace celeriac::broker
