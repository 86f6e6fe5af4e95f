// Renders openapi.json as a page that works offline (Swagger UI would come from a CDN).
"use strict";

function element(name, text, className) {
  const node = document.createElement(name);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resolve(spec, schema) {
  const ref = schema?.$ref;
  return ref ? ref.split("/").slice(1).reduce((node, key) => node[key], spec) : schema;
}

function schemaBlock(spec, schema) {
  const seen = new Set();
  // Inline each referenced schema once, so the block reads top to bottom.
  const expand = (node) => {
    if (Array.isArray(node)) return node.map(expand);
    if (node === null || typeof node !== "object") return node;
    if (node.$ref && !seen.has(node.$ref)) {
      seen.add(node.$ref);
      return expand(resolve(spec, node));
    }
    return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, expand(value)]));
  };
  return element("pre", JSON.stringify(expand(schema), null, 2));
}

function render(spec) {
  const docs = document.getElementById("docs");
  docs.replaceChildren(element("h2", `${spec.info.title} ${spec.info.version}`), element("pre", spec.info.description));
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const section = element("section", undefined, "operation");
      const title = element("h2");
      title.append(element("span", method.toUpperCase(), "method"), element("code", path));
      section.append(title, element("p", operation.summary));
      const body = operation.requestBody;
      if (body) {
        section.append(element("h3", "Request body"), element("p", body.description));
        for (const [type, content] of Object.entries(body.content)) {
          section.append(element("h4", type), schemaBlock(spec, content.schema));
        }
      }
      for (const [status, response] of Object.entries(operation.responses)) {
        section.append(element("h3", `${status}: ${response.description}`));
        for (const [type, content] of Object.entries(response.content ?? {})) {
          section.append(element("h4", type), schemaBlock(spec, content.schema));
        }
      }
      docs.append(section);
    }
  }
}

fetch("openapi.json").then((response) => response.json()).then(render).catch((error) => {
  document.getElementById("docs").replaceChildren(element("p", `openapi.json did not load: ${error.message}`));
});
