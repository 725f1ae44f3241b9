// Deployment settings for the Myeloscope page. Served as is: edit (or overwrite when deploying) this file.
//   apiBase: the API's base URL, '' when the page is served by the API itself (npm start serves it at /).
//            On AWS: the stage URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/prod
//   apiKey:  sent as x-api-key when the API was deployed with API keys (InferenceApi apiKey prop).
// A ?api=<url> query parameter on the page overrides apiBase.
window.MYELOSCOPE_CONFIG = { apiBase: '', apiKey: '' };
