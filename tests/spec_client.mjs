// The JavaScript example from the Data Exports API page, verbatim but for BASE_URL and API_KEY.
// Usage: BASE_URL=... API_KEY=... node spec_client.mjs SITE TYPE FROM TO > file
const BASE_URL = process.env.BASE_URL;
const API_KEY = process.env.API_KEY;

async function streamExport(accountId, exportType, dateFrom, dateTo) {
const response = await fetch(
`${BASE_URL}/exports/stream?site_id=${accountId}`,
{
method: 'POST',
headers: {
'X-API-Key': API_KEY,
'Content-Type': 'application/json'
},
body: JSON.stringify({
export_type: exportType,
format: 'csv',
date_from: dateFrom,
date_to: dateTo
})
}
);

if (response.status === 413) {
throw new Error('Export too large for streaming. Use background job.');
}

const blob = await response.blob();
return blob;
}

const [site, type, from, to] = process.argv.slice(2);
try {
  const blob = await streamExport(site, type, from, to);
  process.stdout.write(Buffer.from(await blob.arrayBuffer()));
} catch (e) {
  process.stderr.write(`${e.message}\n`);
  process.exit(3);
}
