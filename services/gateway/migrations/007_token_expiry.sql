-- Tokens expire (issue 11): every token the API issues carries its end; NULL only for the
-- bootstrap admin, whose token the operator sets (and rotates) in the gateway's settings.
ALTER TABLE users ADD COLUMN token_expires_at timestamptz;
UPDATE users SET token_expires_at = now() + interval '90 days' WHERE user_id <> 'admin';
