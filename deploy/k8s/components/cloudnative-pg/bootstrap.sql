-- Runs once, as superuser, in database "radcurate" when the CloudNativePG cluster is created.
-- Roles are created without passwords here; CloudNativePG's managed roles (cluster.yaml)
-- then adopt them and set the password from each radcurate-pg-<service> Secret.
-- Tables are created later by each service's migration Job, connected as that service's role.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE ROLE gateway LOGIN;
CREATE SCHEMA gateway AUTHORIZATION gateway;
ALTER ROLE gateway SET search_path = gateway;

CREATE ROLE extractor LOGIN;
CREATE SCHEMA extractor AUTHORIZATION extractor;
ALTER ROLE extractor SET search_path = extractor;

CREATE ROLE mapper LOGIN;
CREATE SCHEMA mapper AUTHORIZATION mapper;
ALTER ROLE mapper SET search_path = mapper;

CREATE ROLE sampler LOGIN;
CREATE SCHEMA sampler AUTHORIZATION sampler;
ALTER ROLE sampler SET search_path = sampler;

CREATE ROLE consensus LOGIN;
CREATE SCHEMA consensus AUTHORIZATION consensus;
ALTER ROLE consensus SET search_path = consensus;
