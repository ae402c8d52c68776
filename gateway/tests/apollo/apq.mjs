// Apollo Client's persisted-queries link against the gateway at argv[2]:
// the same query twice, with what each request carried. Prints one JSON
// object: { requests: [{ query, hash }], results: [data, data] }.
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";

const uri = process.argv[2];
const requests = [];
const recording = async (url, init) => {
  const body = JSON.parse(init.body);
  requests.push({
    query: typeof body.query === "string",
    hash: body.extensions?.persistedQuery?.sha256Hash ?? null,
  });
  return fetch(url, init);
};
const client = new ApolloClient({
  cache: new InMemoryCache(),
  link: new PersistedQueryLink({
    sha256: (query) => createHash("sha256").update(query).digest("hex"),
  }).concat(new HttpLink({ uri, fetch: recording })),
});
const STORES = gql`
  query ApqStores {
    stores(first: 5) {
      edges {
        node {
          id
          name
        }
      }
    }
  }
`;
const results = [];
for (let i = 0; i < 2; i++) {
  const { data, error } = await client.query({ query: STORES, fetchPolicy: "network-only" });
  if (error) {
    throw error;
  }
  results.push(data);
}
console.log(JSON.stringify({ requests, results }));
