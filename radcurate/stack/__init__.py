"""The embedded local stack: a Kafka-protocol broker, Postgres, an S3 server and the five services
as loopback processes (`radcurate up` / `down` / `status`)."""
