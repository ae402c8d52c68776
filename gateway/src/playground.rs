//! The GraphiQL playground, served with its assets by the gateway itself.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const AVAILABLE: bool = include!(concat!(env!("OUT_DIR"), "/graphiql_available.rs"));

macro_rules! asset {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/graphiql/", $name))
    };
}

static GRAPHIQL_JS: &[u8] = asset!("graphiql.min.js");
static GRAPHIQL_CSS: &[u8] = asset!("graphiql.min.css");
static REACT_JS: &[u8] = asset!("react.production.min.js");
static REACT_DOM_JS: &[u8] = asset!("react-dom.production.min.js");

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>MallBots GraphiQL</title>
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading the playground...</div>
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
  <script>
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const fetcher = GraphiQL.createFetcher({
      url: "/graphql",
      subscriptionUrl: scheme + "//" + location.host + "/graphql/ws",
      // Browsers cannot set headers on a websocket: the Headers tab's
      // Authorization goes in connection_init instead (read as it connects).
      wsConnectionParams: () => {
        try {
          const headers = JSON.parse(localStorage.getItem("graphiql:headers") || "{}");
          const auth = headers.Authorization || headers.authorization;
          return auth ? { authorization: auth } : {};
        } catch (_) {
          return {};
        }
      },
    });
    const defaultQuery = [
      "# Welcome to MallBots. Run an operation with the play button.",
      "mutation CreateStore {",
      "  createStore(input: {name: \"Waldorf Books\", location: \"Upper level\"}) { id }",
      "}",
      "",
      "query Stores {",
      "  stores { edges { node { id name location participating } } }",
      "}",
      "",
    ].join("\n");
    ReactDOM.createRoot(document.getElementById("graphiql"))
      .render(React.createElement(GraphiQL, { fetcher, defaultQuery, defaultEditorToolsVisibility: true }));
  </script>
</body>
</html>
"##;

const UNAVAILABLE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MallBots</title></head>
<body>
<h1>MallBots GraphQL gateway</h1>
<p>The GraphiQL playground was not bundled into this build (npm was not
available when it was built). GraphQL is served at <code>/graphql</code> and
<code>/graphql/ws</code>; the schema is at <a href="/schema.graphql">/schema.graphql</a>.
Install npm and rebuild to get the playground.</p>
</body></html>
"#;

pub async fn page() -> Html<&'static str> {
    Html(if AVAILABLE { PAGE } else { UNAVAILABLE })
}

pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "graphiql.min.js" => (GRAPHIQL_JS, "text/javascript"),
        "graphiql.min.css" => (GRAPHIQL_CSS, "text/css"),
        "react.production.min.js" => (REACT_JS, "text/javascript"),
        "react-dom.production.min.js" => (REACT_DOM_JS, "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if body.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
