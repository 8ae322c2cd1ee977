package oauth

// deviceCodeFlow is RFC 8628: a person approves the role once on another device after
// device/<name>, while the plugin polls the token endpoint (device.go); from then on the role
// lives on the refresh token the approval gave, exactly as a refresh_token role does.
var deviceCodeFlow = grantFlow{
	validate:  func(*roleEntry, *configEntry) error { return nil },
	request:   delegatedRequest("device"),
	startPath: "device",
}
