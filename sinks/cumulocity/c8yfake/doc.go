// Package c8yfake is a test double of Cumulocity IoT for the gateway's
// Cumulocity sink: the MQTT endpoint (SmartREST 2.0 static templates on
// s/us, errors on s/e, answers on s/ds) built on an embedded mochi broker,
// and the REST API the sink uses (identity, inventory, child devices,
// measurements, events, alarms), with fault injection and an inspection
// API for tests. Both sides listen on 127.0.0.1 with a port chosen by the
// system; Close releases everything.
//
// What it encodes comes from Cumulocity's public documentation. Where no
// public document settles a behaviour, the code marks the choice
// "unverified"; the list:
//
// MQTT connection
//   - A two-part client id "d:<id>" is connection type and identifier; any
//     other "<a>:<b>" is identifier and default template.
//   - CONNACK 2 for an empty identifier or one with / + #; CONNACK 4 for a
//     bad password, an unknown user or tenant, and a username without the
//     "<tenant>/" prefix (over MQTT the prefix is required).
//   - The 16184-byte limit counts the whole PUBLISH packet, fixed header
//     included; a bigger packet disconnects the client without PUBACK.
//   - The PUBACK is sent after the publish was processed and stored.
//   - Publishing on a topic other than s/us, s/us/<child> (and t/us, q/us,
//     c/us, handled alike) is refused; mochi then disconnects a 3.1.1
//     client that used QoS 1. Subscribing is allowed only to s/e, s/ds,
//     s/dt, s/dc/<x>, error and devicecontrol/notifications (0x80 otherwise,
//     wildcards included).
//   - s/e lines and s/ds answers go only to the publishing connection, at
//     QoS 0, and only if it subscribed; they are never queued.
//   - A persistent-session connect (clean session 0) is accepted and
//     treated as clean.
//
// SmartREST
//   - Each line of a multi-line publish is handled on its own: a bad line
//     is reported, the others take effect.
//   - Unquoted fields are trimmed; inside quotes both "" and \" mean a
//     quote (\" preferred where they conflict); text after a closing quote
//     is a syntax error reported as 42.
//   - s/e texts other than "41,100,Device already existing", "Wrong number
//     of arguments" and "Value is not a NUMBER: x" are the fake's own:
//     "43,<id>,Unknown template identifier", "45,<id>,Mandatory field <f>
//     is missing", "45,<id>,<bad time>", "45,101,Value is not a BOOLEAN",
//     "45,305,Invalid severity", "41,100,Device creation is only allowed on
//     s/us", "42,<id>,<CSV error>". Too many fields is an error.
//   - Times need an offset (Z, +01:00 or +0100); empty means server time.
//   - 200 sets the measurement type to the fragment name. 211 stores
//     c8y_TemperatureMeasurement.T unit "C"; 212 c8y_Battery.level "%";
//     210 c8y_SignalStrength rssi "dBm" and ber "%". 201 reads groups of
//     four fields, the unit of the last group may be dropped, an empty unit
//     is stored as "".
//   - 401/402 need latitude and longitude, and create an event of type
//     c8y_LocationUpdate with text "Location updated" and
//     c8y_Position{lat,lng,alt,accuracy}.
//   - 101 uses the child id verbatim as the child's c8y_Serial. 101 for an
//     external id that exists creates nothing, reports nothing and only
//     makes sure of the link. Its optional fourth field must be true/false.
//   - Data on s/us/<x> auto-creates <x> as a child of the connection's
//     device ("MQTT Device <x>", type c8y_MQTTChildDevice) and is accepted
//     for any existing external id, wherever it sits in the inventory.
//   - 105 answers "106,<external ids of direct children>"; 123 answers
//     "124,<id>"; 125 and 500–503 store nothing; 114 overwrites the list;
//     117 sets c8y_RequiredAvailability only when absent.
//   - A new alarm matching an ACTIVE one of the same source and type bumps
//     its count and time and keeps its text and severity.
//
// REST
//   - Error names: 415 "general/unsupportedMediaType", 409
//     "identity/Conflict", 429 "general/tooManyRequests", 5xx
//     "general/internalError"; message texts other than the 401, 404
//     identity and 422 mandatory-fields ones are the fake's own.
//   - application/json is accepted in place of the vendor media types;
//     anything else, or none, is 415.
//   - An unknown source, or one the user did not create (directly or
//     through an ancestor), is a 422, not a 403 or 404.
//   - A measurement fragment is any top-level object; each of its members
//     must be a series with a numeric "value" (finite float64). Other
//     top-level values are properties and are not checked.
//   - A measurementCollection is all or nothing: one invalid measurement
//     refuses the request and stores none.
//   - Binding an external id that exists is 409 even for the same object;
//     linking a child twice answers 201 again.
//   - A login without "<tenant>/" is accepted (as on the tenant's domain).
//   - Retry-After is sent on 429/503 only when a fault asks for it.
//
// Certificates (Options.CertAuth)
//   - The MQTT TLS listener requires a client certificate that chains to
//     one of TrustedCAs at the fake's clock (expired and not-yet-valid are
//     refused) with the clientAuth key usage; a refused handshake is
//     recorded in Errors ("TLS handshake refused: ..."). The real platform
//     also accepts password logins on 8883; this listener does not.
//   - Auto-registration is always on: any such certificate logs in as user
//     "device_<CN>" with no prior registration; username and password in
//     CONNECT are ignored.
//   - The client id's device identifier must equal the CN, else CONNACK 5.
//   - POST /devicecontrol/deviceAccessToken is served only on its own mTLS
//     listener (TokenURL; Cumulocity's is port 8443 of the tenant domain).
//     X-Ssl-Cert-Chain is optional; when sent, its first certificate must
//     be the one presented, else 401. The reply is {"accessToken": ...}, a
//     JWT-shaped token whose payload carries sub, ten and exp (the real
//     token's claims are not documented beyond being a JWT); lifetime
//     TokenLifetime (default 1 h as documented).
//   - The REST API accepts "Authorization: Bearer <token>" until the
//     token expires or RevokeTokens; then 401 security/Unauthorized.
//
// JSON via MQTT: only inventory/managedObjects/update/<id> (inventory.go,
// with its assumptions: <id> is the c8y_Serial external id, or else a
// managed object id).
//
// Not implemented: the other JSON over MQTT topics
// (measurement/measurements/create and so on, the error topic's content), operations, custom
// templates, password logins over TLS, certificate revocation lists, the
// per-tenant rate limiter (its queue-then-disconnect behaviour).
package c8yfake
