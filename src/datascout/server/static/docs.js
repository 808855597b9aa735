// The API reference at /docs: Swagger UI from the server's own files (no CDN), reading /openapi.json.
// With a token, "Authorize" takes it; it is sent as a header, never in a URL.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
