package httpapi

// The API's routes as net/http patterns ("METHOD /path/{wildcard}"). The
// server registers exactly these (a test checks), the client calls them
// and docs/openapi.yaml describes them (checked too).
const (
	RouteStatus           = "GET /api/v1/status"
	RouteDeployments      = "GET /api/v1/deployments"
	RouteApply            = "POST /api/v1/deployments"
	RouteDeployment       = "GET /api/v1/deployments/{name}"
	RouteDeleteDeployment = "DELETE /api/v1/deployments/{name}"
	RouteHistory          = "GET /api/v1/deployments/{name}/history"
	RouteUndo             = "POST /api/v1/deployments/{name}/undo"
	RouteRollout          = "GET /api/v1/deployments/{name}/rollout"
	RoutePauseRollout     = "POST /api/v1/deployments/{name}/rollout/pause"
	RouteResumeRollout    = "POST /api/v1/deployments/{name}/rollout/resume"
	RouteDevices          = "GET /api/v1/devices"
	RouteDevice           = "GET /api/v1/devices/{id}"
	RouteLabels           = "PATCH /api/v1/devices/{id}/labels"
	RouteLogs             = "GET /api/v1/devices/{id}/logs"
	RouteExec             = "POST /api/v1/devices/{id}/exec"
	RouteOrphans          = "GET /api/v1/orphans"
	RouteReleaseOrphans   = "POST /api/v1/orphans/release"
	RouteEnrollmentTokens = "POST /api/v1/enrollment-tokens"
	RouteEnroll           = "POST /api/v1/enroll"
	RouteEnrollStatus     = "GET /api/v1/enroll/{id}"
	RouteIdentities       = "GET /api/v1/identities"
	RouteApprove          = "POST /api/v1/devices/{id}/approve"
	RouteRevoke           = "DELETE /api/v1/devices/{id}/identity"
	RouteSecrets          = "GET /api/v1/secrets"
	RouteCreateSecret     = "POST /api/v1/secrets"
	RouteReplaceSecret    = "PUT /api/v1/secrets/{name}"
	RouteDeleteSecret     = "DELETE /api/v1/secrets/{name}"
)

// Routes lists every route of the API.
func Routes() []string {
	return []string{RouteStatus, RouteDeployments, RouteApply, RouteDeployment, RouteDeleteDeployment, RouteHistory, RouteUndo,
		RouteRollout, RoutePauseRollout, RouteResumeRollout,
		RouteDevices, RouteDevice, RouteLabels, RouteLogs, RouteExec, RouteOrphans, RouteReleaseOrphans,
		RouteEnrollmentTokens, RouteEnroll, RouteEnrollStatus, RouteIdentities, RouteApprove, RouteRevoke,
		RouteSecrets, RouteCreateSecret, RouteReplaceSecret, RouteDeleteSecret}
}

// NoToken reports the routes a device calls without a bearer token: its
// enrollment request and the question whether it was approved.
func NoToken(route string) bool { return route == RouteEnroll || route == RouteEnrollStatus }
