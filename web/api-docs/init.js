// Starts Swagger UI on the server's own OpenAPI document. A file of its own, not an inline
// script: the page's Content-Security-Policy allows scripts from this origin only.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Requests made with "Try it out" carry the token given under "Authorize" only.
    withCredentials: false,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
