-- A key's own HMAC signing secret, sealed (AES-256-GCM under the sidecar's
-- master key, bound to the row's key_hash): 'v1:<master key id>:<nonce>:<ciphertext>'.
-- NULL for a key whose tokens are signed with the gateway's shared secret.
ALTER TABLE api_keys ADD COLUMN sealed_signing_secret TEXT NULL;
