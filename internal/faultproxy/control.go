package faultproxy

import (
	"encoding/json"
	"net/http"
)

// ControlHandler is the proxy's control API, served apart from the proxied traffic:
//
//	PUT /_fault?scenario=NAME   switch scenario, Hold included (204; 400 names the valid ones)
//	GET /_fault                 current scenario, counters (held: requests Hold holds now) and
//	                            the scenario and control-scenario lists (JSON)
//	GET /_fault/ca.pem          the CA to trust for the proxy in TLS mode (404 otherwise)
func (p *Proxy) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_fault", func(w http.ResponseWriter, r *http.Request) {
		if err := p.SetScenario(Scenario(r.URL.Query().Get("scenario"))); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error(), "scenarios": Scenarios, "controls": Controls})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_fault", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"stats": p.Stats(), "url": p.URL(), "scenarios": Scenarios, "controls": Controls})
	})
	mux.HandleFunc("GET /_fault/ca.pem", func(w http.ResponseWriter, _ *http.Request) {
		if p.CAPEM() == "" {
			http.Error(w, "the proxy does not serve TLS", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write([]byte(p.CAPEM()))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
