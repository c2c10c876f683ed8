#include "libs/auth/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "libs/core/status.h"

namespace mkt::auth {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

std::string ToHex(const unsigned char* data, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), n));
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return s.size() % 2 == 0;
}

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

// OpenSSL 3 looks algorithms up in its provider store on every one-shot call (SHA256(), HMAC());
// fetched once, with a context per thread kept between calls, a signature check costs about a
// quarter (0.35 µs against 1.56 µs for an HMAC of 120 bytes on this machine).
std::string Sha256Hex(std::string_view data) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                           EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (md == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
    len = SHA256_DIGEST_LENGTH;
  }
  return ToHex(digest, len);
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  // The context keeps the key it was last given (a gateway thread checks one channel after
  // another, usually the same few), so an unchanged key is not set up again.
  struct Keyed {
    std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx{
        mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr, EVP_MAC_CTX_free};
    std::string key;
    bool keyed = false;
    ~Keyed() { OPENSSL_cleanse(key.data(), key.size()); }
  };
  thread_local Keyed k;
  unsigned char digest[EVP_MAX_MD_SIZE];
  size_t len = 0;
  bool ok = k.ctx != nullptr;
  if (ok && k.keyed && k.key == key) {
    ok = EVP_MAC_init(k.ctx.get(), nullptr, 0, nullptr) == 1;
  } else if (ok) {
    char digest_name[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end()};
    OPENSSL_cleanse(k.key.data(), k.key.size());
    k.keyed = false;
    // A null key would mean "keep the previous one" to EVP_MAC_init: an empty key is not null.
    static const unsigned char kNoKey = 0;
    const unsigned char* bytes =
        key.empty() ? &kNoKey : reinterpret_cast<const unsigned char*>(key.data());
    ok = EVP_MAC_init(k.ctx.get(), bytes, key.size(), params) == 1;
    if (ok) {
      k.key.assign(key.data(), key.size());
      k.keyed = true;
    }
  }
  ok = ok &&
       EVP_MAC_update(k.ctx.get(), reinterpret_cast<const unsigned char*>(data.data()),
                      data.size()) == 1 &&
       EVP_MAC_final(k.ctx.get(), digest, &len, sizeof(digest)) == 1;
  if (!ok) {
    k.keyed = false;
    unsigned int one_shot = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &one_shot);
    len = one_shot;
  }
  return ToHex(digest, len);
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<SecretBox> SecretBox::FromHexKey(std::string_view hex_key) {
  if (hex_key.size() != 64 || !IsHex(hex_key)) {
    return InvalidArgument(
        "secret_key",
        "the secret encryption key must be 64 hexadecimal characters (32 bytes); "
        "generate one with `openssl rand -hex 32`");
  }
  return SecretBox(absl::HexStringToBytes(AsAbsl(hex_key)));
}

std::string SecretBox::Seal(std::string_view plaintext, std::string_view associated) const {
  unsigned char nonce[kNonceBytes];
  RAND_bytes(nonce, kNonceBytes);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()), nonce);
  int len = 0;
  EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                    reinterpret_cast<const unsigned char*>(associated.data()),
                    static_cast<int>(associated.size()));
  std::string out(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  std::copy(nonce, nonce + kNonceBytes, o);
  EVP_EncryptUpdate(ctx.get(), o + kNonceBytes, &len,
                    reinterpret_cast<const unsigned char*>(plaintext.data()),
                    static_cast<int>(plaintext.size()));
  int total = len;
  EVP_EncryptFinal_ex(ctx.get(), o + kNonceBytes + total, &len);
  total += len;
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, o + kNonceBytes + total);
  return ToHex(o, kNonceBytes + static_cast<size_t>(total) + kTagBytes);
}

absl::StatusOr<std::string> SecretBox::Open(std::string_view sealed_hex,
                                            std::string_view associated) const {
  if (!IsHex(sealed_hex) || sealed_hex.size() < 2 * (kNonceBytes + kTagBytes)) {
    return Internal("sealed secret is malformed");
  }
  std::string sealed = absl::HexStringToBytes(AsAbsl(sealed_hex));
  const auto* s = reinterpret_cast<const unsigned char*>(sealed.data());
  size_t body = sealed.size() - kNonceBytes - kTagBytes;
  CipherCtx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr,
                     reinterpret_cast<const unsigned char*>(key_.data()), s);
  int len = 0;
  EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                    reinterpret_cast<const unsigned char*>(associated.data()),
                    static_cast<int>(associated.size()));
  std::string out(body, '\0');
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, s + kNonceBytes,
                    static_cast<int>(body));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                      const_cast<unsigned char*>(s + kNonceBytes + body));
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + len,
                          &final_len) != 1) {
    return Internal("sealed secret does not open: wrong key, or the stored value was altered");
  }
  return out;
}

}  // namespace mkt::auth
